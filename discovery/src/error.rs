//! Errors of the manifest source, written for the operator who has to fix the file.
//!
//! Each error names the file, the document in it (counted from 1, as an editor shows them
//! top-down), the object when known, the field path, and what to change.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Where an object came from: a file and the 1-based index of the YAML document in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based: the first document of a file is document 1.
    pub document: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, document {}", self.file.display(), self.document)
    }
}

/// One problem in the manifests.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {}: {source}; check that the path exists and is readable", path.display())]
    Read { path: PathBuf, source: io::Error },

    #[error("{location}: not valid YAML: {message}; fix the syntax (indentation, quoting, `---` between documents)")]
    Yaml { location: Location, message: String },

    /// A field has the wrong type or value. `object` is e.g. `Pod shop/web-0` when known.
    #[error("{location} ({object}): field {field}: {message}")]
    Field {
        location: Location,
        object: String,
        field: String,
        message: String,
    },

    /// An AuthorizationPolicy that could not be understood. Unlike the other errors it does not
    /// stop the manifests from loading: the policy is enforced in its fail-closed form, or left
    /// out when it cannot change access (AUDIT); `enforced_as` says which.
    #[error("{location} ({object}): field {field}: {message}; until it is fixed the policy {enforced_as}")]
    Policy {
        location: Location,
        object: String,
        field: String,
        message: String,
        enforced_as: String,
    },

    /// A Gateway API object that breaks the schema. Like [`ManifestError::Policy`] it does not
    /// stop the manifests from loading: the object is kept marked rejected, so the controller
    /// reports it as not accepted and no proxy serves it. `field` is the first problem's field,
    /// `message` lists every problem with its field.
    #[error("{location} ({object}): {message}; the object is kept as rejected (not accepted, never served) until it is fixed")]
    Rejected {
        location: Location,
        object: String,
        field: String,
        message: String,
    },

    #[error(
        "{location}: {object} is defined twice, first in {first}; remove or rename one of them"
    )]
    Duplicate {
        location: Location,
        object: String,
        first: Location,
    },

    /// Two objects claim the same address, e.g. two Pods with one IP.
    #[error("{location} ({object}): {what} is already used by {other_object} ({other_location}); give each its own address")]
    Conflict {
        location: Location,
        object: String,
        what: String,
        other_object: String,
        other_location: Location,
    },
}

impl ManifestError {
    /// The field path of a [`ManifestError::Field`], for tests and admin output.
    pub fn field(&self) -> Option<&str> {
        match self {
            ManifestError::Field { field, .. }
            | ManifestError::Policy { field, .. }
            | ManifestError::Rejected { field, .. } => Some(field),
            _ => None,
        }
    }

    /// Whether the problem keeps the manifests from loading; an AuthorizationPolicy that cannot
    /// be understood does not (see [`ManifestError::Policy`]), nor does a rejected Gateway API
    /// object ([`ManifestError::Rejected`]).
    pub fn blocks_load(&self) -> bool {
        !matches!(
            self,
            ManifestError::Policy { .. } | ManifestError::Rejected { .. }
        )
    }

    /// Where the problem is: the file, and the document (0 when the file could not be read).
    pub fn origin(&self) -> (&std::path::Path, usize) {
        match self {
            ManifestError::Read { path, .. } => (path, 0),
            ManifestError::Yaml { location, .. }
            | ManifestError::Field { location, .. }
            | ManifestError::Policy { location, .. }
            | ManifestError::Rejected { location, .. }
            | ManifestError::Duplicate { location, .. }
            | ManifestError::Conflict { location, .. } => (&location.file, location.document),
        }
    }
}

/// All problems found in one load; never empty. A load with any problem that
/// [blocks](ManifestError::blocks_load) publishes nothing.
#[derive(Debug)]
pub struct ManifestErrors {
    errors: Vec<ManifestError>,
}

impl ManifestErrors {
    pub(crate) fn new(errors: Vec<ManifestError>) -> Option<Self> {
        (!errors.is_empty()).then_some(ManifestErrors { errors })
    }

    /// All of `errors` if any [blocks the load](ManifestError::blocks_load); otherwise they are
    /// handed back to be reported alongside the snapshot.
    pub(crate) fn check(errors: Vec<ManifestError>) -> Result<Vec<ManifestError>, ManifestErrors> {
        if errors.iter().any(ManifestError::blocks_load) {
            Err(ManifestErrors { errors })
        } else {
            Ok(errors)
        }
    }

    pub fn errors(&self) -> &[ManifestError] {
        &self.errors
    }
}

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errors.as_slice() {
            [only] => write!(f, "{only}"),
            errors => {
                write!(f, "{} problems in the manifests:", errors.len())?;
                for (i, error) in errors.iter().enumerate() {
                    write!(f, "\n  {}. {error}", i + 1)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ManifestErrors {}
