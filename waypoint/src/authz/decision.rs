//! The outcome of an authorization, naming the policy that decided it.

use std::fmt;

use discovery::policy::{Action, AuthorizationPolicy};
use http::StatusCode;

/// The status of a denied request, as Envoy's RBAC filter answers.
pub const DENIED_STATUS: StatusCode = StatusCode::FORBIDDEN;
/// The body of a denied request, Envoy's wording (clients and tests look for it).
pub const DENIED_BODY: &str = "RBAC: access denied";

/// What [`super::authorize`] decided. Borrows the policies of the snapshot the request runs
/// on; its `Display` is the reason for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'p> {
    /// No ALLOW policy applies and no DENY policy matched.
    Allowed,
    /// This ALLOW policy matched (the first that did) and no DENY policy matched.
    AllowedBy(&'p AuthorizationPolicy),
    /// This DENY policy matched; or this policy could not be understood and is enforced
    /// fail-closed (its `invalid` says why): a broken DENY denies everything, a broken ALLOW
    /// denies what no other ALLOW policy allows.
    DeniedBy(&'p AuthorizationPolicy),
    /// ALLOW policies apply and none matched; `first` is one of them, `others` how many more.
    NotAllowed {
        first: &'p AuthorizationPolicy,
        others: usize,
    },
}

impl<'p> Decision<'p> {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed | Decision::AllowedBy(_))
    }

    /// The policy that decided: the one that allowed or denied, or for
    /// [`Decision::NotAllowed`] the first ALLOW policy that applied.
    pub fn policy(&self) -> Option<&'p AuthorizationPolicy> {
        match *self {
            Decision::Allowed => None,
            Decision::AllowedBy(p) | Decision::DeniedBy(p) => Some(p),
            Decision::NotAllowed { first, .. } => Some(first),
        }
    }

    /// `namespace/name` of [`Self::policy`], for the access log.
    pub fn policy_name(&self) -> Option<String> {
        self.policy().map(|p| format!("{}/{}", p.namespace, p.name))
    }
}

impl fmt::Display for Decision<'_> {
    /// e.g. `denied by DENY policy shop/deny-delete`, `denied: no ALLOW policy matched
    /// (shop/allow-get and 1 more apply)`, `denied by shop/broken, which could not be
    /// understood (field …; until it is fixed the policy …)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Decision::Allowed => f.write_str("allowed: no ALLOW policy applies"),
            Decision::AllowedBy(p) => write!(f, "allowed by {}/{}", p.namespace, p.name),
            Decision::DeniedBy(p) => match &p.invalid {
                Some(invalid) => write!(
                    f,
                    "denied by {}/{}, which could not be understood ({invalid})",
                    p.namespace, p.name
                ),
                None => {
                    let action = match p.action {
                        Action::Deny => "DENY",
                        Action::Allow => "ALLOW",
                    };
                    write!(f, "denied by {action} policy {}/{}", p.namespace, p.name)
                }
            },
            Decision::NotAllowed { first, others } => {
                write!(
                    f,
                    "denied: no ALLOW policy matched ({}/{}",
                    first.namespace, first.name
                )?;
                match others {
                    0 => f.write_str(" applies)"),
                    n => write!(f, " and {n} more apply)"),
                }
            }
        }
    }
}
