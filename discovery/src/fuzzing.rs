//! Entry points for the cargo-fuzz targets in `fuzz/` (not a stable API): manifest text through
//! the same collector `--manifests` files go through, and one AuthorizationPolicy object through
//! the conversion both sources use, strict and fail-closed.
#![doc(hidden)]

use std::path::Path;

use serde::Deserialize;
use serde_yaml::Value;

use crate::convert::{self, AuthorizationPolicyResource, ConvertError, FailClosedScope};
use crate::decode::Collector;
use crate::error::{ManifestError, ManifestErrors};
use crate::policy::AuthorizationPolicy;
use crate::snapshot::{Snapshot, SnapshotOptions};

/// The file name problems in [`load_manifest_text`] are reported against.
pub const MANIFEST_PATH: &str = "fuzz.yaml";

/// Loads `text` as one `--manifests` file (multi-document YAML or JSON) with default options:
/// the snapshot and the non-blocking problems (policies enforced fail-closed or left out), or
/// every problem that blocked the load.
pub fn load_manifest_text(text: &str) -> Result<(Snapshot, Vec<ManifestError>), ManifestErrors> {
    let options = SnapshotOptions::default();
    let mut collector = Collector::new(&options);
    collector.add_file(Path::new(MANIFEST_PATH), text);
    collector
        .finish(&options)
        .map(|loaded| (loaded.snapshot, loaded.problems))
}

/// One AuthorizationPolicy object, as YAML or JSON text, converted.
#[derive(Debug)]
pub struct PolicyConversion {
    /// [`convert::authorization_policy`] on the decoded resource; `None` when it does not even
    /// decode as one.
    pub strict: Option<Result<AuthorizationPolicy, ConvertError>>,
    /// [`convert::authorization_policy_or_fail_closed`]: what a source enforces.
    pub enforced: Result<AuthorizationPolicy, ConvertError>,
}

/// Converts one object as the sources do (`None` if `text` is not one YAML value), with
/// `root_namespace` as the fail-closed scope of a policy whose namespace cannot be read.
pub fn convert_policy(text: &str, root_namespace: &str) -> Option<PolicyConversion> {
    let mut value = Value::deserialize(serde_yaml::Deserializer::from_str(text)).ok()?;
    value.apply_merge().ok()?;
    let decoded: Result<AuthorizationPolicyResource, ConvertError> =
        serde_path_to_error::deserialize(value.clone()).map_err(|error| {
            ConvertError::new(error.path().to_string(), error.into_inner().to_string())
        });
    let strict = decoded.as_ref().ok().map(convert::authorization_policy);
    let scope = FailClosedScope {
        root_namespace,
        unnamed: "(unnamed)",
    };
    let enforced = convert::authorization_policy_or_fail_closed(decoded, || value, &scope);
    Some(PolicyConversion { strict, enforced })
}
