//! What a kind's conversion receives and what it may answer.

use super::KindInfo;
use crate::convert::ConvertError;
use crate::raw::Raw;

/// Which source an object came from: a few rules differ (a Pod in a manifest must name its node;
/// from the API server an unscheduled Pod is simply not the mesh's yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Manifests,
    Kubernetes,
}

/// One object to convert.
#[derive(Debug)]
pub(crate) struct Input<'a> {
    pub raw: &'a Raw,
    pub info: &'static KindInfo,
    /// `group/version` as the object (or the watched resource) says.
    pub api_version: &'a str,
    /// Set when the object is of the kind's group but of a version Ambit does not read: it is
    /// then not understood, and the kind decides what that means (an error, fail-closed, or
    /// rejected).
    pub unsupported_version: Option<ConvertError>,
    pub origin: Origin,
    /// Where AuthorizationPolicies apply mesh-wide (the fail-closed scope of an unreadable one).
    pub root_namespace: &'a str,
    /// The name of an AuthorizationPolicy whose own cannot be read (manifests: file and document).
    pub unnamed: &'a str,
}

impl Input<'_> {
    /// `apiVersion kind`, as decode errors name the schema to follow.
    pub(crate) fn schema(&self) -> String {
        format!("{} {}", self.api_version, self.info.name)
    }

    /// The version part of [`Input::api_version`] (`v1` of `gateway.networking.k8s.io/v1`).
    pub(crate) fn version(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map_or(self.api_version, |(_, version)| version)
    }
}

/// Why an object is not in the mesh's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    /// The object cannot be used: a manifest load stops on it, the API source leaves it out.
    Invalid(ConvertError),
    /// An AuthorizationPolicy that cannot be understood but never changes access (AUDIT): left
    /// out and reported, without stopping a manifest load.
    LeftOut(ConvertError),
}

impl Problem {
    pub(crate) fn error(&self) -> &ConvertError {
        match self {
            Problem::Invalid(error) | Problem::LeftOut(error) => error,
        }
    }
}
