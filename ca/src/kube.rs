//! Kubernetes mode: node agents authenticate with their ServiceAccount token, the root lives in
//! a Secret.
//!
//! A ztunnel mounts a projected service account token with the CA's audience (`ambit-ca` by
//! default) and sends it as its bearer token. The CA asks the API server about it with a
//! TokenReview restricted to that audience, so a token for the API server itself, for another
//! service, a legacy Secret-based token, an expired or a forged one is refused there. The
//! review names the service account and, for pod-bound tokens, the pod holding the token
//! (`authentication.kubernetes.io/pod-name` / `pod-uid`); the caller must be the ztunnel
//! service account, and the pod — looked up live, never from a cache that could lag behind a
//! reschedule — must be a ztunnel pod (label) with that UID. Its `spec.nodeName` is the node the
//! caller proved, and from there authorisation is as in local mode.
//!
//! A waypoint (a pod the waypoint controller runs, labelled
//! `gateway.networking.k8s.io/gateway-name`) mounts the same kind of token for its own service
//! account. When the review names another service account than ztunnel's, the token must be
//! bound to a pod too, and that pod — looked up live in the service account's namespace — must
//! still have that UID, run as that service account and be a waypoint pod. The caller is then
//! that service account (`system:serviceaccount:<ns>:<sa>`, [`crate::authz::Caller`]), which
//! may obtain its own identity only, exactly as a waypoint's tokens-file line in local mode.

use std::time::Duration;

use certs::{CaError, CertificateAuthority};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::Client;

use crate::authz::{Authentication, NodeAuthenticator, Refusal};
use crate::store::{CERT_FILE, KEY_FILE, ROOTS_FILE};

const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";
/// Projected service account tokens are ~1 KiB; anything far bigger is not one.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The Kubernetes-mode flags of `ambit-ca serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// Keep the root in this Secret (NAMESPACE/NAME): use it if it exists (e.g. written by
    /// cert-manager: tls.crt, tls.key, optional ca.crt), else create a root and store it there.
    #[arg(long, env = "AMBIT_CA_ROOT_SECRET")]
    pub root_secret: Option<String>,
    /// Publish the trust bundle (public roots) in this ConfigMap (NAMESPACE/NAME) for node
    /// agents to mount as --ca-root.
    #[arg(long, env = "AMBIT_CA_ROOT_CONFIGMAP")]
    pub root_configmap: Option<String>,
    /// Lifetime of a root created in --root-secret.
    #[arg(long, default_value = "10y", value_parser = humantime::parse_duration)]
    pub root_lifetime: Duration,
    /// Audience node agents' projected tokens must be issued for.
    #[arg(long, env = "AMBIT_CA_TOKEN_AUDIENCE", default_value = "ambit-ca")]
    pub token_audience: String,
    /// Namespace of the ztunnel pods.
    #[arg(long, env = "AMBIT_ZTUNNEL_NAMESPACE", default_value = "ambit-system")]
    pub ztunnel_namespace: String,
    /// Service account of the ztunnel pods.
    #[arg(long, env = "AMBIT_ZTUNNEL_SERVICE_ACCOUNT", default_value = "ztunnel")]
    pub ztunnel_service_account: String,
    /// Label (KEY=VALUE) every ztunnel pod carries.
    #[arg(long, env = "AMBIT_ZTUNNEL_LABEL", default_value = "app=ztunnel", value_parser = parse_label)]
    pub ztunnel_label: (String, String),
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE, e.g. app=ztunnel")),
    }
}

/// Who may call: the ztunnel pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ztunnels {
    pub namespace: String,
    pub service_account: String,
    pub label: (String, String),
}

impl Ztunnels {
    pub fn from_args(args: &KubeArgs) -> Self {
        Ztunnels {
            namespace: args.ztunnel_namespace.clone(),
            service_account: args.ztunnel_service_account.clone(),
            label: args.ztunnel_label.clone(),
        }
    }

    fn username(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }
}

/// A NodeAuthenticator backed by TokenReview and a live pod lookup. Every call costs the API
/// server a review: serve it behind [`crate::token_cache::CachingAuthenticator`].
pub struct TokenReviewAuthenticator {
    client: Client,
    audience: String,
    ztunnels: Ztunnels,
}

impl TokenReviewAuthenticator {
    pub fn new(client: Client, audience: String, ztunnels: Ztunnels) -> Self {
        TokenReviewAuthenticator {
            client,
            audience,
            ztunnels,
        }
    }

    async fn review(&self, token: &str) -> Result<String, Refusal> {
        screen_token(token, &self.audience)?;
        let review = TokenReview {
            metadata: ObjectMeta::default(),
            spec: TokenReviewSpec {
                audiences: Some(vec![self.audience.clone()]),
                token: Some(token.to_owned()),
            },
            status: None,
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|error| {
                Refusal::ReviewUnavailable(format!(
                    "TokenReview failed: {error} (the CA's service account needs create on tokenreviews)"
                ))
            })?;
        let status = reviewed.status.unwrap_or_default();
        match token_holder(&status, &self.audience, &self.ztunnels)? {
            TokenHolder::Ztunnel { pod, uid } => {
                let found = self.pod(&self.ztunnels.namespace, &pod).await?;
                pod_node(found.as_ref(), &pod, &uid, &self.ztunnels)
            }
            TokenHolder::Waypoint(holder) => {
                let found = self.pod(&holder.namespace, &holder.pod).await?;
                waypoint_caller(found.as_ref(), &holder)
            }
        }
    }

    /// A live read of the pod holding the token (never a cache that may lag a reschedule).
    async fn pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>, Refusal> {
        Api::<Pod>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|error| {
                Refusal::ReviewUnavailable(format!(
                    "cannot read pod {namespace}/{name}: {error} (the CA's service account needs get on pods)"
                ))
            })
    }
}

impl NodeAuthenticator for TokenReviewAuthenticator {
    fn authenticate<'a>(&'a self, token: &'a str) -> Authentication<'a> {
        Box::pin(self.review(token))
    }

    fn screen(&self, token: &str) -> Result<(), Refusal> {
        screen_token(token, &self.audience)
    }
}

/// Refuses, without asking the API server, what cannot be a service account token: those are
/// JSON Web Tokens, three base64url parts joined by dots, about a KiB long.
pub fn screen_token(token: &str, audience: &str) -> Result<(), Refusal> {
    let base64url = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='))
    };
    let parts: Vec<&str> = token.split('.').collect();
    let reason = if token.len() > MAX_TOKEN_BYTES {
        format!(
            "{} bytes long, more than a service account token ({MAX_TOKEN_BYTES})",
            token.len()
        )
    } else if parts.len() != 3 || !parts.iter().all(|part| base64url(part)) {
        "not a JSON Web Token (three base64url parts joined by dots)".to_owned()
    } else {
        return Ok(());
    };
    Err(Refusal::TokenRejected {
        audience: audience.to_owned(),
        reason,
    })
}

/// The reviewed username, once the review says the token is valid for `audience`.
pub(crate) fn verified_username(
    status: &TokenReviewStatus,
    audience: &str,
) -> Result<String, Refusal> {
    if status.authenticated != Some(true) {
        let reason = status
            .error
            .clone()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "not authenticated".to_owned());
        return Err(Refusal::TokenRejected {
            audience: audience.to_owned(),
            reason,
        });
    }
    // The server intersects the token's audiences with the requested one; an empty answer
    // would mean an authenticator that ignores audiences accepted it.
    if !status.audiences.iter().flatten().any(|a| a == audience) {
        return Err(Refusal::TokenRejected {
            audience: audience.to_owned(),
            reason: format!(
                "the API server did not confirm audience {audience:?} (confirmed {:?})",
                status.audiences.clone().unwrap_or_default()
            ),
        });
    }
    Ok(status
        .user
        .as_ref()
        .and_then(|user| user.username.clone())
        .unwrap_or_default())
}

/// The pod a token is bound to, `(name, uid)`, from the review's extra fields.
pub(crate) fn pod_extras(status: &TokenReviewStatus) -> Option<(String, String)> {
    let extra = status.user.as_ref()?.extra.as_ref()?;
    let single = |key: &str| {
        extra
            .get(key)
            .and_then(|values| values.first())
            .filter(|v| !v.is_empty())
            .cloned()
    };
    Some((single(POD_NAME_EXTRA)?, single(POD_UID_EXTRA)?))
}

/// From a TokenReview's answer to the ztunnel pod that holds the token: `(name, uid)`.
pub fn bound_pod(
    status: &TokenReviewStatus,
    audience: &str,
    ztunnels: &Ztunnels,
) -> Result<(String, String), Refusal> {
    let username = verified_username(status, audience)?;
    let expected = ztunnels.username();
    if username != expected {
        return Err(Refusal::NotZtunnel(format!(
            "the token belongs to {username:?}, not to the ztunnel service account {expected:?}"
        )));
    }
    pod_extras(status).ok_or_else(|| {
        Refusal::NotZtunnel(format!(
            "the token of {username} is not bound to a pod; mount a projected serviceAccountToken volume (audience {audience:?}) in the ztunnel DaemonSet"
        ))
    })
}

/// The node of the ztunnel pod `name` (which must still be the pod with `uid`).
pub fn pod_node(
    pod: Option<&Pod>,
    name: &str,
    uid: &str,
    ztunnels: &Ztunnels,
) -> Result<String, Refusal> {
    let qualified = format!("{}/{name}", ztunnels.namespace);
    let pod = pod.ok_or_else(|| {
        Refusal::NotZtunnel(format!(
            "pod {qualified} that holds the token no longer exists"
        ))
    })?;
    if pod.metadata.uid.as_deref() != Some(uid) {
        return Err(Refusal::NotZtunnel(format!(
            "pod {qualified} was replaced since the token was issued (uid {uid} is gone)"
        )));
    }
    let (key, value) = &ztunnels.label;
    let labelled = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(key))
        .is_some_and(|v| v == value);
    if !labelled {
        return Err(Refusal::NotZtunnel(format!(
            "pod {qualified} is not a ztunnel pod (no label {key}={value})"
        )));
    }
    let spec = pod.spec.as_ref();
    let service_account = spec
        .and_then(|s| s.service_account_name.as_deref())
        .unwrap_or("default");
    if service_account != ztunnels.service_account {
        return Err(Refusal::NotZtunnel(format!(
            "pod {qualified} runs as service account {service_account:?}, not {:?}",
            ztunnels.service_account
        )));
    }
    spec.and_then(|s| s.node_name.clone())
        .filter(|node| !node.is_empty())
        .ok_or_else(|| Refusal::NotZtunnel(format!("pod {qualified} is not scheduled on a node")))
}

/// Why the root Secret cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RootSecretError {
    #[error("--root-secret {0:?} is not NAMESPACE/NAME, e.g. ambit-system/ambit-ca-root")]
    BadName(String),
    #[error("cannot read Secret {secret}: {source}; the CA's service account needs get and create on secrets in {namespace}")]
    Read {
        secret: String,
        namespace: String,
        source: Box<kube::Error>,
    },
    #[error("Secret {secret} has no {key}; it must hold tls.crt and tls.key (and optionally ca.crt), as cert-manager writes them, or be deleted so the CA creates a new root (which invalidates every issued certificate)")]
    Incomplete { secret: String, key: &'static str },
    #[error("Secret {secret}: {key} is not UTF-8 PEM text")]
    NotText { secret: String, key: &'static str },
    #[error("the root in Secret {secret} is unusable: {source}")]
    Invalid { secret: String, source: CaError },
    #[error("cannot create a root: {0}")]
    Generate(#[source] CaError),
    #[error("cannot create Secret {secret}: {source}; the CA's service account needs create on secrets in {namespace}")]
    Create {
        secret: String,
        namespace: String,
        source: Box<kube::Error>,
    },
}

/// The CA kept in the Secret `namespace/name`; a new root is created there if it is missing.
/// Two CA replicas starting together cannot end up with two roots: the Secret is created, not
/// replaced, and the one that loses the race loads the winner's.
pub async fn root_from_secret(
    client: Client,
    secret: &str,
    trust_domain: &str,
    lifetime: Duration,
) -> Result<CertificateAuthority, RootSecretError> {
    let (namespace, name) = secret
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .ok_or_else(|| RootSecretError::BadName(secret.to_owned()))?;
    let api = Api::<Secret>::namespaced(client, namespace);
    let read_error = |source| RootSecretError::Read {
        secret: secret.to_owned(),
        namespace: namespace.to_owned(),
        source: Box::new(source),
    };
    if let Some(existing) = api.get_opt(name).await.map_err(read_error)? {
        tracing::info!(%secret, "mesh root loaded from the Secret");
        return ca_from_secret(secret, &existing, trust_domain);
    }
    let root = CertificateAuthority::generate_root(trust_domain, lifetime)
        .map_err(RootSecretError::Generate)?;
    let data = [
        (CERT_FILE, &root.cert_pem),
        (KEY_FILE, &root.key_pem),
        (ROOTS_FILE, &root.cert_pem),
    ]
    .into_iter()
    .map(|(key, pem)| (key.to_owned(), ByteString(pem.clone().into_bytes())))
    .collect();
    let object = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &object).await {
        Ok(created) => {
            tracing::info!(%secret, "created a new mesh root and stored it in the Secret");
            ca_from_secret(secret, &created, trust_domain)
        }
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            let winner = api.get(name).await.map_err(read_error)?;
            tracing::info!(%secret, "another CA replica created the root first; using it");
            ca_from_secret(secret, &winner, trust_domain)
        }
        Err(source) => Err(RootSecretError::Create {
            secret: secret.to_owned(),
            namespace: namespace.to_owned(),
            source: Box::new(source),
        }),
    }
}

/// The CA in a TLS Secret (`tls.crt`, `tls.key`, optional `ca.crt`).
pub fn ca_from_secret(
    secret: &str,
    object: &Secret,
    trust_domain: &str,
) -> Result<CertificateAuthority, RootSecretError> {
    let field = |key: &'static str| -> Result<Option<&str>, RootSecretError> {
        match object.data.as_ref().and_then(|data| data.get(key)) {
            None => Ok(None),
            Some(bytes) if bytes.0.is_empty() => Ok(None),
            Some(bytes) => {
                std::str::from_utf8(&bytes.0)
                    .map(Some)
                    .map_err(|_| RootSecretError::NotText {
                        secret: secret.to_owned(),
                        key,
                    })
            }
        }
    };
    let required = |key: &'static str| {
        field(key)?.ok_or_else(|| RootSecretError::Incomplete {
            secret: secret.to_owned(),
            key,
        })
    };
    let cert = required(CERT_FILE)?;
    let key = required(KEY_FILE)?;
    let roots = field(ROOTS_FILE)?;
    CertificateAuthority::from_pem(trust_domain, cert, key, roots).map_err(|source| {
        RootSecretError::Invalid {
            secret: secret.to_owned(),
            source,
        }
    })
}

#[path = "kube_waypoint.rs"]
mod waypoint;
pub use waypoint::{token_holder, waypoint_caller, TokenHolder, WaypointHolder};

#[cfg(test)]
#[path = "kube_tests.rs"]
mod tests;
