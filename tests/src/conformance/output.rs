//! What `ambit-testapp mesh-client` printed, read back the way the Gateway API suite reads
//! Istio's echo client (conformance/utils/echo/parse.go): the first `StatusCode=`, `Hostname=`
//! and `URL=`; every `RequestHeader=` value (names compared case-insensitively); for
//! `ResponseHeader=` the last value of a name wins (Go's `Header.Set`). Lines are matched from
//! their start — our client writes one field per line — where Go's regexes match anywhere.

use std::collections::BTreeMap;

/// One answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EchoResponse {
    pub status: String,
    pub hostname: String,
    pub url: Option<String>,
    /// Lower-cased name → values in order.
    pub request_headers: BTreeMap<String, Vec<String>>,
    /// Lower-cased name → values in order (the judge uses the last, as Go does).
    pub response_headers: BTreeMap<String, Vec<String>>,
}

impl EchoResponse {
    pub fn parse(output: &str) -> EchoResponse {
        let mut response = EchoResponse::default();
        let mut status = None;
        let mut hostname = None;
        for line in output.lines() {
            let line = line.trim_end_matches('\r');
            if let Some(value) = line.strip_prefix("StatusCode=") {
                status.get_or_insert_with(|| value.to_string());
            } else if let Some(value) = line.strip_prefix("Hostname=") {
                hostname.get_or_insert_with(|| value.to_string());
            } else if let Some(value) = line.strip_prefix("URL=") {
                response.url.get_or_insert_with(|| value.to_string());
            } else if let Some(pair) = line.strip_prefix("RequestHeader=") {
                push_header(&mut response.request_headers, pair);
            } else if let Some(pair) = line.strip_prefix("ResponseHeader=") {
                push_header(&mut response.response_headers, pair);
            }
        }
        response.status = status.unwrap_or_default();
        response.hostname = hostname.unwrap_or_default();
        response
    }

    /// Values of request header `name` joined with `,` (Go: `strings.Join(values, ",")`).
    pub fn request_header(&self, name: &str) -> Option<String> {
        self.request_headers
            .get(&name.to_ascii_lowercase())
            .map(|v| v.join(","))
    }

    /// The value Go's `ResponseHeaders.Get` returns after `Set` per line: the last one.
    pub fn response_header(&self, name: &str) -> Option<&str> {
        self.response_headers
            .get(&name.to_ascii_lowercase())
            .and_then(|values| values.last())
            .map(String::as_str)
    }
}

fn push_header(headers: &mut BTreeMap<String, Vec<String>>, pair: &str) {
    // Go skips a header line without a colon.
    if let Some((name, value)) = pair.split_once(':') {
        headers
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(value.to_string());
    }
}

/// The `Summary` line of `mesh-client --count`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub requests: u32,
    pub errors: u32,
    pub statuses: BTreeMap<String, u32>,
    /// Pod name → answers.
    pub hostnames: BTreeMap<String, u32>,
    pub first_error: Option<String>,
}

impl Summary {
    pub fn parse(output: &str) -> Result<Summary, String> {
        let line = output
            .lines()
            .find_map(|line| line.strip_prefix("Summary "))
            .ok_or_else(|| format!("no Summary line in mesh-client output: {output:?}"))?;
        let mut summary = Summary {
            first_error: output
                .lines()
                .find_map(|l| l.strip_prefix("FirstError="))
                .map(str::to_string),
            ..Summary::default()
        };
        for field in line.split_whitespace() {
            let (key, value) = field.split_once('=').unwrap_or((field, ""));
            match key {
                "requests" => summary.requests = number(value)?,
                "errors" => summary.errors = number(value)?,
                "statuses" => summary.statuses = counts(value)?,
                "hostnames" => summary.hostnames = counts(value)?,
                _ => {}
            }
        }
        Ok(summary)
    }
}

fn number(text: &str) -> Result<u32, String> {
    text.parse()
        .map_err(|_| format!("Summary: {text:?} is not a count"))
}

/// `a:3,b:4` → {a: 3, b: 4}.
fn counts(text: &str) -> Result<BTreeMap<String, u32>, String> {
    text.split(',')
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (key, count) = item
                .rsplit_once(':')
                .ok_or_else(|| format!("Summary: {item:?} is not key:count"))?;
            Ok((key.to_string(), number(count)?))
        })
        .collect()
}
