//! One object as a source delivered it, before it is decoded: a YAML value from a manifest file
//! or a JSON value from the API server. Both decode into the same types with the same field-path
//! errors, so each kind's conversion is written once for both sources.

use serde::de::DeserializeOwned;

use crate::convert::ConvertError;

#[derive(Debug, Clone)]
pub(crate) enum Raw {
    Yaml(serde_yaml::Value),
    Json(serde_json::Value),
}

impl Raw {
    /// Decodes into `T`; an error names the field path and says which schema (`schema`:
    /// `apiVersion kind`) the value must follow.
    pub(crate) fn decode<T: DeserializeOwned>(&self, schema: &str) -> Result<T, ConvertError> {
        let result = match self {
            Raw::Yaml(value) => serde_path_to_error::deserialize(value)
                .map_err(|e| (e.path().to_string(), e.into_inner().to_string())),
            Raw::Json(value) => serde_path_to_error::deserialize(value)
                .map_err(|e| (e.path().to_string(), e.into_inner().to_string())),
        };
        result.map_err(|(path, message)| {
            let field = if path.is_empty() || path == "." {
                "(document root)".to_owned()
            } else {
                path
            };
            ConvertError::new(
                field,
                format!("{message}; fix the value to match the {schema} schema"),
            )
        })
    }

    /// The object as YAML, for the lenient readers of objects that did not decode (an
    /// AuthorizationPolicy's fail-closed form). `Null` if a JSON value has no YAML form, which
    /// JSON from the API server always has.
    pub(crate) fn to_yaml(&self) -> serde_yaml::Value {
        match self {
            Raw::Yaml(value) => value.clone(),
            Raw::Json(value) => serde_yaml::to_value(value).unwrap_or(serde_yaml::Value::Null),
        }
    }

    /// The same object labelled with another apiVersion: for typed decoding of an older served
    /// version whose shape the newer type reads (EndpointSlice `v1beta1` as `v1`).
    pub(crate) fn with_api_version(&self, api_version: &str) -> Raw {
        match self {
            Raw::Yaml(value) => {
                let mut value = value.clone();
                if let serde_yaml::Value::Mapping(map) = &mut value {
                    map.insert("apiVersion".into(), api_version.into());
                }
                Raw::Yaml(value)
            }
            Raw::Json(value) => {
                let mut value = value.clone();
                if let Some(map) = value.as_object_mut() {
                    map.insert("apiVersion".into(), api_version.into());
                }
                Raw::Json(value)
            }
        }
    }
}
