//! RequestMirror: a copy of (a share of) the requests goes to another backend, whose answer is
//! ignored. The share is decided by a random number the caller draws, so tests are exact.

use discovery::gateway_api::Mirror;
use serde::Serialize;

use super::ResolveBackend;
use crate::routes::backend::BackendTarget;

/// Where mirrored requests go and how many: `numerator / denominator` of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MirrorTarget {
    /// An invalid target mirrors nothing (the original request is not affected by a mirror).
    pub target: BackendTarget,
    pub numerator: u32,
    /// Never 0 (the model guarantees it; 0 here mirrors nothing).
    pub denominator: u32,
}

impl MirrorTarget {
    pub fn compile(mirror: &Mirror, resolve: &mut ResolveBackend<'_>) -> Self {
        MirrorTarget {
            target: resolve(&mirror.backend),
            numerator: mirror.fraction.numerator,
            denominator: mirror.fraction.denominator,
        }
    }

    /// Whether this request is mirrored, for a uniformly random `random`: true for
    /// `numerator` of every `denominator` values of `random % denominator`.
    pub fn should_mirror(&self, random: u32) -> bool {
        if self.denominator == 0 || self.numerator == 0 {
            return false;
        }
        self.numerator >= self.denominator || random % self.denominator < self.numerator
    }
}
