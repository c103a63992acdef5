//! Conversion and validation of the Gateway API kinds, as table tests: good objects with the
//! defaults filled in, then one broken field per row, each named by its path.
#![allow(clippy::unwrap_used)]

mod gateway;
mod http;
mod routes;

use super::Source;
use crate::convert::ConvertError;
use crate::gateway_api::model::Rejection;
use crate::raw::Raw;

type Convert<T> = fn(&Raw, &Source<'_>) -> Result<T, ConvertError>;

/// Converts a manifest (YAML) of `kind` at `version` (`v1`, …).
fn convert_at<T>(
    convert: Convert<T>,
    kind: &str,
    version: &str,
    yaml: &str,
) -> Result<T, ConvertError> {
    let raw = Raw::Yaml(serde_yaml::from_str(yaml).unwrap());
    let schema = format!("gateway.networking.k8s.io/{version} {kind}");
    convert(
        &raw,
        &Source {
            schema: &schema,
            version,
            unsupported: None,
        },
    )
}

fn convert<T>(convert: Convert<T>, kind: &str, yaml: &str) -> T {
    convert_at(convert, kind, "v1", yaml).unwrap()
}

/// The fields a rejection names, in order.
fn fields(rejection: &Option<Rejection>) -> Vec<String> {
    rejection
        .iter()
        .flat_map(|r| r.problems.iter().map(|p| p.field.clone()))
        .collect()
}

/// Runs a table of `(case, spec, field that must be named)` through `check`, which converts an
/// object with that spec and returns its rejection.
fn assert_rejections(table: &[(&str, &str, &str)], check: impl Fn(&str) -> Option<Rejection>) {
    for (case, spec, field) in table {
        let rejection = check(spec);
        let named = fields(&rejection);
        assert!(
            named.iter().any(|f| f == field),
            "{case}: expected {field}, got {named:?} ({rejection:?})"
        );
        let message = rejection.unwrap().to_string();
        assert!(message.contains(&format!("{field}: ")), "{case}: {message}");
    }
}
