//! The schema's rules as checks that collect every problem with its field path, so one pass over
//! an object reports all that is wrong with it (an operator fixes them in one edit, not one per
//! reload). Patterns are the CRDs' own, compiled once.

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;

use crate::gateway_api::model::FieldProblem;

/// A field path from the object's root: `spec.rules[0].matches[1].path.value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field(String);

impl Field {
    pub(crate) fn root(name: &str) -> Field {
        Field(name.to_owned())
    }

    pub(crate) fn at(&self, name: &str) -> Field {
        Field(format!("{}.{name}", self.0))
    }

    pub(crate) fn index(&self, index: usize) -> Field {
        Field(format!("{}[{index}]", self.0))
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The problems found so far in one object.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<FieldProblem>);

impl Problems {
    pub(crate) fn add(&mut self, field: &Field, problem: impl Into<String>) {
        self.0.push(FieldProblem {
            field: field.to_string(),
            problem: problem.into(),
        });
    }

    pub(crate) fn into_vec(self) -> Vec<FieldProblem> {
        self.0
    }

    /// A required field: its value, or a problem and `None`.
    pub(crate) fn required<'a, T>(&mut self, field: &Field, value: Option<&'a T>) -> Option<&'a T> {
        if value.is_none() {
            self.add(field, "missing; this field is required");
        }
        value
    }

    /// A list's items, with a problem if there are more than the schema allows.
    pub(crate) fn list<'a, T>(
        &mut self,
        field: &Field,
        list: &'a Option<Vec<T>>,
        max: usize,
    ) -> &'a [T] {
        let items = list.as_deref().unwrap_or_default();
        if items.len() > max {
            self.add(
                field,
                format!("has {} entries; at most {max} are allowed", items.len()),
            );
        }
        items
    }

    /// A string checked against one of the CRD patterns below.
    pub(crate) fn pattern(&mut self, field: &Field, value: &str, rule: &Rule) {
        if value.is_empty() || value.len() > rule.max_len || !rule.pattern.is_match(value) {
            self.add(field, format!("{value:?} is not {}", rule.what));
        }
    }

    /// One of a fixed set of values.
    pub(crate) fn one_of<'a>(
        &mut self,
        field: &Field,
        value: &'a str,
        allowed: &[&str],
    ) -> Option<&'a str> {
        if allowed.contains(&value) {
            Some(value)
        } else {
            self.add(
                field,
                format!("{value:?} is not one of {}", allowed.join(", ")),
            );
            None
        }
    }

    /// A port number (1–65535).
    pub(crate) fn port(&mut self, field: &Field, value: i32) -> Option<u16> {
        match u16::try_from(value) {
            Ok(port) if port != 0 => Some(port),
            _ => {
                self.add(
                    field,
                    format!("port {value} is out of range; use 1 to 65535"),
                );
                None
            }
        }
    }

    /// A number within `min..=max`.
    pub(crate) fn within(&mut self, field: &Field, value: i32, min: i32, max: i32) -> Option<u32> {
        if (min..=max).contains(&value) {
            u32::try_from(value).ok()
        } else {
            self.add(
                field,
                format!("{value} is out of range; use {min} to {max}"),
            );
            None
        }
    }

    /// A regular expression the route engine can compile (its syntax is the `regex` crate's,
    /// which is RE2's: no look-around, no backreferences).
    pub(crate) fn regex(&mut self, field: &Field, value: &str) {
        if let Err(error) = Regex::new(value) {
            self.add(
                field,
                format!("{value:?} is not a regular expression Ambit supports: {error}"),
            );
        }
    }

    /// A Gateway API duration (GEP-2257: `1h`, `500ms`, `1m30s`; at most 4 parts of 5 digits).
    pub(crate) fn duration(&mut self, field: &Field, value: &str) -> Option<Duration> {
        let parsed = parse_duration(value);
        if parsed.is_none() {
            self.add(
                field,
                format!(
                    "{value:?} is not a duration; write e.g. 500ms, 10s, 1m30s (units h, m, s, ms)"
                ),
            );
        }
        parsed
    }

    /// Names that must be unique within a list (listener names, rule names).
    pub(crate) fn unique<'a>(
        &mut self,
        field: &Field,
        names: impl IntoIterator<Item = (usize, &'a str)>,
        what: &str,
    ) {
        let mut seen = std::collections::BTreeMap::new();
        for (index, name) in names {
            if let Some(first) = seen.insert(name, index) {
                self.add(
                    &field.index(index),
                    format!(
                        "{what} {name:?} is already used by entry {first}; {what}s must be unique"
                    ),
                );
            }
        }
    }
}

/// A CRD pattern with its maximum length and how to say what it means.
pub(crate) struct Rule {
    pattern: Regex,
    max_len: usize,
    what: &'static str,
}

fn rule(pattern: &str, max_len: usize, what: &'static str) -> Rule {
    Rule {
        // The patterns are constants of this file, covered by its tests.
        #[allow(clippy::expect_used)]
        pattern: Regex::new(pattern).expect("a valid CRD pattern"),
        max_len,
        what,
    }
}

pub(crate) static DNS_SUBDOMAIN: LazyLock<Rule> = LazyLock::new(|| {
    rule(
        r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        253,
        "a valid name (lower-case letters, digits, '-' and '.', at most 253 characters)",
    )
});
pub(crate) static NAMESPACE: LazyLock<Rule> = LazyLock::new(|| {
    rule(
        r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        63,
        "a valid namespace (a DNS label: lower-case letters, digits and '-', at most 63 characters)",
    )
});
pub(crate) static GROUP: LazyLock<Rule> = LazyLock::new(|| {
    rule(
        r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        253,
        "a valid API group (a DNS subdomain, or empty for the core group)",
    )
});
pub(crate) static KIND: LazyLock<Rule> = LazyLock::new(|| {
    rule(
        r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$",
        63,
        "a valid kind (letters, digits and '-', starting with a letter)",
    )
});
pub(crate) static HOSTNAME: LazyLock<Rule> = LazyLock::new(|| {
    rule(
        r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        253,
        "a valid hostname (lower-case DNS name, optionally starting with '*.')",
    )
});
pub(crate) static PRECISE_HOSTNAME: LazyLock<Rule> = LazyLock::new(|| {
    rule(
        r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        253,
        "a valid hostname (lower-case DNS name, no wildcard)",
    )
});
pub(crate) static HEADER_NAME: LazyLock<Rule> = LazyLock::new(|| {
    rule(
        r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$",
        256,
        "a valid HTTP header name (an RFC 7230 token, at most 256 characters)",
    )
});
pub(crate) static HEADER_VALUE: LazyLock<Rule> = LazyLock::new(|| {
    rule(
        r"^[!-~]+([\t ]?[!-~]+)*$",
        4096,
        "a valid header value (visible ASCII, single spaces or tabs inside, at most 4096 characters)",
    )
});
pub(crate) static PATH: LazyLock<Rule> = LazyLock::new(|| {
    rule(
        r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$",
        1024,
        "a valid URL path (RFC 3986 characters or %XX escapes, at most 1024 characters)",
    )
});
pub(crate) static LISTENER_PROTOCOL: LazyLock<Rule> = LazyLock::new(|| {
    rule(
        r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/[A-Za-z0-9]+$",
        255,
        "a valid protocol (HTTP, HTTPS, TLS, TCP, UDP or a domain-prefixed name)",
    )
});
pub(crate) static ADDRESS_TYPE: LazyLock<Rule> = LazyLock::new(|| {
    rule(
        r"^Hostname|IPAddress|NamedAddress|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$",
        253,
        "a valid address type (IPAddress, Hostname, NamedAddress or a domain-prefixed name)",
    )
});
pub(crate) static CORS_ORIGIN: LazyLock<Rule> = LazyLock::new(|| {
    rule(
        r"(^\*$)|(^(http(s)?):\/\/(((\*\.)?([a-zA-Z0-9\-]+\.)*[a-zA-Z0-9-]+|\*)(:([0-9]{1,5}))?)$)",
        253,
        "a valid origin (`*`, or http(s)://host[:port] with an optional leading '*.')",
    )
});

/// GEP-2257 durations: `^([0-9]{1,5}(h|m|s|ms)){1,4}$`.
pub(crate) fn parse_duration(value: &str) -> Option<Duration> {
    let mut rest = value;
    let mut total = Duration::ZERO;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total += unit * u32::try_from(number).ok()?;
        parts += 1;
    }
    (1..=4).contains(&parts).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_gep_2257() {
        let table = [
            ("0s", Some(Duration::ZERO)),
            ("500ms", Some(Duration::from_millis(500))),
            ("1h30m", Some(Duration::from_secs(5400))),
            ("1m1s1ms1h", Some(Duration::from_millis(3_661_001))),
            ("99999s", Some(Duration::from_secs(99_999))),
            ("", None),
            ("1", None),
            ("1d", None),
            ("1.5s", None),
            ("-1s", None),
            ("123456s", None),
            ("1s1s1s1s1s", None),
            ("1 s", None),
        ];
        for (input, expected) in table {
            assert_eq!(parse_duration(input), expected, "{input:?}");
        }
    }

    #[test]
    fn patterns_accept_and_refuse_as_the_crds_do() {
        let table: [(&LazyLock<Rule>, &str, bool); 14] = [
            (&HOSTNAME, "*.example.com", true),
            (&HOSTNAME, "foo.*.com", false),
            (&HOSTNAME, "Example.com", false),
            (&PRECISE_HOSTNAME, "*.example.com", false),
            (&HEADER_NAME, "X-Header-Set", true),
            (&HEADER_NAME, "bad header", false),
            (&HEADER_VALUE, "a b\tc", true),
            (&HEADER_VALUE, "trailing ", false),
            (&PATH, "/v2/%2e?", false),
            (&PATH, "/v2/a~b", true),
            (&LISTENER_PROTOCOL, "example.com/custom", true),
            (&ADDRESS_TYPE, "test/fake-invalid-type", true),
            (&CORS_ORIGIN, "https://*.example.com:8443", true),
            (&CORS_ORIGIN, "ftp://example.com", false),
        ];
        for (rule, value, ok) in table {
            let mut problems = Problems::default();
            problems.pattern(&Field::root("f"), value, rule);
            assert_eq!(problems.into_vec().is_empty(), ok, "{value:?}");
        }
    }

    #[test]
    fn field_paths_read_like_the_manifest() {
        let field = Field::root("spec")
            .at("rules")
            .index(0)
            .at("matches")
            .index(1);
        assert_eq!(
            field.at("path").at("value").to_string(),
            "spec.rules[0].matches[1].path.value"
        );
    }
}
