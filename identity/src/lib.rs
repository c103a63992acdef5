//! SPIFFE workload identities: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! This is the only identity form the mesh issues or accepts (DESIGN §3). Parsing is strict so that
//! a certificate carrying anything else is rejected with an error that says exactly what is wrong.
//!
//! A crate of its own, with no dependency but `thiserror`: `discovery` names identities but must not
//! pull in the PKI and TLS stack (rcgen, rustls, h2, prost) that `certs` builds on; `certs`
//! re-exports everything here.

use std::fmt;
use std::str::FromStr;

/// The trust domain used when none is configured, as in Istio.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

const SCHEME: &str = "spiffe://";
/// SPIFFE caps the whole ID at 2048 bytes; trust domains at 255.
const MAX_ID_LEN: usize = 2048;
const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// Kubernetes namespace and service-account names are DNS labels / subdomains of at most 253.
const MAX_K8S_NAME_LEN: usize = 253;

/// Why a string is not a valid Ambit SPIFFE identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "identity is empty; expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    Empty,
    #[error("identity {0:?} is not a SPIFFE ID: it must start with \"spiffe://\"")]
    NotSpiffe(String),
    #[error("identity is {0} bytes long; SPIFFE IDs are at most 2048 bytes")]
    TooLong(usize),
    #[error("trust domain {domain:?} is invalid: {reason}")]
    BadTrustDomain {
        domain: String,
        reason: &'static str,
    },
    #[error(
        "identity {0:?} has no path; expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    MissingPath(String),
    #[error(
        "identity {id:?} has path {path:?}; Ambit identities have exactly the path /ns/<namespace>/sa/<service-account>"
    )]
    BadPath { id: String, path: String },
    #[error("identity {id:?} has an empty {segment} segment")]
    EmptySegment { id: String, segment: &'static str },
    #[error("identity {id:?} has extra path segments after the service account ({extra:?})")]
    ExtraPath { id: String, extra: String },
    #[error("{what} {value:?} in identity is invalid: {reason}")]
    BadName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("identity {0:?} carries a query or fragment, which SPIFFE IDs may not have")]
    QueryOrFragment(String),
}

/// A workload identity: which service account of which namespace, in which trust domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

impl SpiffeId {
    /// Builds an identity from its parts, validating each of them.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, IdentityError> {
        validate_trust_domain(trust_domain)?;
        validate_k8s_name("namespace", namespace)?;
        validate_k8s_name("service account", service_account)?;
        Ok(SpiffeId {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The URI form, as it appears in a certificate's URI SAN and in logs.
    pub fn to_uri(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = IdentityError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.is_empty() {
            return Err(IdentityError::Empty);
        }
        if input.len() > MAX_ID_LEN {
            return Err(IdentityError::TooLong(input.len()));
        }
        // The scheme is case-insensitive per RFC 3986, but SPIFFE requires lower case.
        let rest = input
            .strip_prefix(SCHEME)
            .ok_or_else(|| IdentityError::NotSpiffe(input.to_owned()))?;
        if rest.contains(['?', '#']) {
            return Err(IdentityError::QueryOrFragment(input.to_owned()));
        }
        let (trust_domain, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => {
                validate_trust_domain(rest)?;
                return Err(IdentityError::MissingPath(input.to_owned()));
            }
        };
        validate_trust_domain(trust_domain)?;

        let segments: Vec<&str> = path[1..].split('/').collect();
        let bad_path = || IdentityError::BadPath {
            id: input.to_owned(),
            path: path.to_owned(),
        };
        if segments.len() < 4 || segments[0] != "ns" || segments[2] != "sa" {
            // Report an empty segment precisely when that is the problem ("/ns//sa/x").
            if segments.first() == Some(&"ns") && segments.get(1) == Some(&"") {
                return Err(IdentityError::EmptySegment {
                    id: input.to_owned(),
                    segment: "namespace",
                });
            }
            return Err(bad_path());
        }
        let (namespace, service_account) = (segments[1], segments[3]);
        if namespace.is_empty() {
            return Err(IdentityError::EmptySegment {
                id: input.to_owned(),
                segment: "namespace",
            });
        }
        if service_account.is_empty() {
            return Err(IdentityError::EmptySegment {
                id: input.to_owned(),
                segment: "service account",
            });
        }
        if segments.len() > 4 {
            return Err(IdentityError::ExtraPath {
                id: input.to_owned(),
                extra: segments[4..].join("/"),
            });
        }
        validate_k8s_name("namespace", namespace)?;
        validate_k8s_name("service account", service_account)?;
        Ok(SpiffeId {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })
    }
}

/// Trust domains are lower-case DNS-like names: letters, digits, '.', '-', '_' (SPIFFE ID spec §2.1).
pub fn validate_trust_domain(domain: &str) -> Result<(), IdentityError> {
    let bad = |reason| IdentityError::BadTrustDomain {
        domain: domain.to_owned(),
        reason,
    };
    if domain.is_empty() {
        return Err(bad("it is empty"));
    }
    if domain.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(bad("it is longer than 255 characters"));
    }
    if domain.contains(':') {
        return Err(bad("it must not contain a port or user info"));
    }
    if domain.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(bad("it must be lower case"));
    }
    if !domain
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
    {
        return Err(bad("only a-z, 0-9, '.', '-' and '_' are allowed"));
    }
    if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
        return Err(bad("it has an empty DNS label"));
    }
    Ok(())
}

/// Namespaces and service accounts are Kubernetes names (DNS-1123 subdomain rules).
fn validate_k8s_name(what: &'static str, value: &str) -> Result<(), IdentityError> {
    let bad = |reason| IdentityError::BadName {
        what,
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(bad("it is empty"));
    }
    if value.len() > MAX_K8S_NAME_LEN {
        return Err(bad("it is longer than 253 characters"));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-'))
    {
        return Err(bad("Kubernetes names use only a-z, 0-9, '-' and '.'"));
    }
    let first_and_last_alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_and_last_alnum(value.chars().next()) || !first_and_last_alnum(value.chars().last()) {
        return Err(bad("it must start and end with a letter or digit"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_identities_round_trip() {
        for input in [
            "spiffe://cluster.local/ns/default/sa/default",
            "spiffe://example.org/ns/shop/sa/frontend-v2",
            "spiffe://td_with-under.score/ns/a/sa/b",
            "spiffe://cluster.local/ns/kube-system/sa/a.b.c",
            "spiffe://1.2/ns/0/sa/9",
        ] {
            let id: SpiffeId = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(id.to_string(), input);
        }
        let id: SpiffeId = "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap();
        assert_eq!(
            (id.trust_domain(), id.namespace(), id.service_account()),
            ("cluster.local", "shop", "cart")
        );
        assert_eq!(SpiffeId::new("cluster.local", "shop", "cart").unwrap(), id);
    }

    #[test]
    fn malformed_identities_name_the_problem() {
        use IdentityError as E;
        let long = format!("spiffe://td/ns/{}/sa/x", "a".repeat(2100));
        let long_ns = format!("spiffe://td/ns/{}/sa/x", "a".repeat(300));
        type Expectation = fn(&IdentityError) -> bool;
        let table: Vec<(&str, Expectation)> = vec![
            ("", |e| matches!(e, E::Empty)),
            ("http://cluster.local/ns/a/sa/b", |e| {
                matches!(e, E::NotSpiffe(_))
            }),
            ("SPIFFE://cluster.local/ns/a/sa/b", |e| {
                matches!(e, E::NotSpiffe(_))
            }),
            ("cluster.local/ns/a/sa/b", |e| matches!(e, E::NotSpiffe(_))),
            ("spiffe:///ns/a/sa/b", |e| {
                matches!(e, E::BadTrustDomain { .. })
            }),
            ("spiffe://Cluster.Local/ns/a/sa/b", |e| {
                matches!(e, E::BadTrustDomain { .. })
            }),
            ("spiffe://cluster.local:443/ns/a/sa/b", |e| {
                matches!(e, E::BadTrustDomain { .. })
            }),
            ("spiffe://clu$ter/ns/a/sa/b", |e| {
                matches!(e, E::BadTrustDomain { .. })
            }),
            ("spiffe://a..b/ns/a/sa/b", |e| {
                matches!(e, E::BadTrustDomain { .. })
            }),
            ("spiffe://cluster.local", |e| matches!(e, E::MissingPath(_))),
            ("spiffe://cluster.local/", |e| {
                matches!(e, E::BadPath { .. })
            }),
            ("spiffe://cluster.local/ns/a", |e| {
                matches!(e, E::BadPath { .. })
            }),
            ("spiffe://cluster.local/sa/b/ns/a", |e| {
                matches!(e, E::BadPath { .. })
            }),
            ("spiffe://cluster.local/ns//sa/b", |e| {
                matches!(
                    e,
                    E::EmptySegment {
                        segment: "namespace",
                        ..
                    }
                )
            }),
            ("spiffe://cluster.local/ns/a/sa/", |e| {
                matches!(
                    e,
                    E::EmptySegment {
                        segment: "service account",
                        ..
                    }
                )
            }),
            ("spiffe://cluster.local/ns/a/sa/b/extra", |e| {
                matches!(e, E::ExtraPath { .. })
            }),
            ("spiffe://cluster.local/ns/a/sa/b/", |e| {
                matches!(e, E::ExtraPath { .. })
            }),
            ("spiffe://cluster.local/ns/A/sa/b", |e| {
                matches!(e, E::BadName { .. })
            }),
            ("spiffe://cluster.local/ns/a/sa/-b", |e| {
                matches!(e, E::BadName { .. })
            }),
            ("spiffe://cluster.local/ns/a b/sa/c", |e| {
                matches!(e, E::BadName { .. })
            }),
            ("spiffe://cluster.local/ns/a/sa/b?x=1", |e| {
                matches!(e, E::QueryOrFragment(_))
            }),
            ("spiffe://cluster.local/ns/a/sa/b#frag", |e| {
                matches!(e, E::QueryOrFragment(_))
            }),
            (long.as_str(), |e| matches!(e, E::TooLong(_))),
            (long_ns.as_str(), |e| matches!(e, E::BadName { .. })),
        ];
        for (input, expected) in table {
            let err = input
                .parse::<SpiffeId>()
                .expect_err(&format!("{input:?} must be rejected"));
            assert!(expected(&err), "{input:?} gave the wrong error: {err:?}");
            assert!(!err.to_string().is_empty());
        }
    }
}
