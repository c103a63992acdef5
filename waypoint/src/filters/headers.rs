//! RequestHeaderModifier and ResponseHeaderModifier.
//!
//! Order of the edits: **remove, then set, then add**. The Gateway API does not order the three
//! lists; this is Envoy's order ("remove-before-add", `HeaderParser::evaluateHeaders`), which
//! every Envoy-based implementation (Istio included) inherits, so a route behaves the same after
//! a migration. It only matters when one name appears in two lists (the schema allows it): `remove:
//! [x]` with `set: [x: v]` leaves `x: v`; `set: [x: a]` with `add: [x: b]` leaves both values.
//!
//! `add` appends a second header line rather than joining values with `", "`: the conformance
//! suite reads headers joined with `","` and expects `old,new` exactly.

use discovery::gateway_api::HeaderModifier;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::FilterError;

/// Compiled header edits: names and values already parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderEdits {
    /// Parses a modifier; `filter` names it in the error.
    pub fn compile(filter: &'static str, modifier: &HeaderModifier) -> Result<Self, FilterError> {
        let pair = |h: &discovery::gateway_api::HeaderValue| {
            let name = header_name(filter, &h.name)?;
            let value = HeaderValue::from_str(&h.value).map_err(|_| FilterError::HeaderValue {
                filter,
                name: h.name.clone(),
            })?;
            Ok((name, value))
        };
        Ok(HeaderEdits {
            set: modifier.set.iter().map(pair).collect::<Result<_, _>>()?,
            add: modifier.add.iter().map(pair).collect::<Result<_, _>>()?,
            remove: modifier
                .remove
                .iter()
                .map(|name| header_name(filter, name))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Applies the edits (see the module docs for the order).
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

fn header_name(filter: &'static str, name: &str) -> Result<HeaderName, FilterError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| FilterError::HeaderName {
        filter,
        name: name.to_owned(),
    })
}
