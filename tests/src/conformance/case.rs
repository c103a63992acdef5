//! The case files (`conformance/gateway-api/cases/mesh-*.yaml`, schema in that folder's
//! README) as types: only the keys the mesh harness reads are named; every other key lands in
//! an `extra` map, so a data set with more keys still parses and nothing is silently lost.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{HarnessError, Result};

type Extra = BTreeMap<String, serde_yaml::Value>;

/// One test: `cases/mesh-<ShortName>.yaml`.
#[derive(Debug, Clone, Deserialize)]
pub struct CaseFile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub provisional: bool,
    #[serde(default)]
    pub profiles: Vec<String>,
    pub manifests: Manifests,
    #[serde(default)]
    pub cases: Vec<Case>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Manifests {
    #[serde(default)]
    pub base: Option<String>,
    #[serde(default)]
    pub files: Vec<ManifestFile>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A manifest of the test's own, verbatim (placeholders such as `{GATEWAY_CLASS_NAME}` kept).
#[derive(Debug, Clone, Deserialize)]
pub struct ManifestFile {
    pub path: String,
    pub content: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Case {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    pub target: Target,
    pub request: Request,
    pub expect: Expect,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Case {
    /// `name`, else `group`, else `<method> <host><path>`: how the report names the case.
    pub fn label(&self) -> String {
        self.name
            .clone()
            .or_else(|| self.group.clone())
            .unwrap_or_else(|| {
                format!(
                    "{} {}{}",
                    self.request.method(),
                    self.request.host(),
                    self.request.path.as_deref().unwrap_or("")
                )
            })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Target {
    /// Mesh cases: the pod the request is sent from.
    #[serde(default)]
    pub mesh_client: Option<MeshClient>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MeshClient {
    pub namespace: String,
    /// `app=echo,version=v1`: equality terms joined by commas.
    pub pod_selector: String,
}

impl MeshClient {
    /// The selector's `key=value` terms; a term without `=` is an error (set-based selectors
    /// do not occur in the data).
    pub fn selector(&self) -> Result<BTreeMap<String, String>> {
        parse_selector(&self.pod_selector)
    }
}

/// `a=b,c=d` → {a: b, c: d}.
pub fn parse_selector(text: &str) -> Result<BTreeMap<String, String>> {
    text.split(',')
        .map(str::trim)
        .filter(|term| !term.is_empty())
        .map(|term| {
            term.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| {
                    HarnessError::Invalid(format!("selector term {term:?} is not key=value"))
                })
        })
        .collect()
}

#[derive(Debug, Clone, Deserialize)]
pub struct Request {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub follow_redirects: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Request {
    /// The URL host, `echo` when unset (the mesh default).
    pub fn host(&self) -> &str {
        self.host.as_deref().unwrap_or("echo")
    }

    pub fn method(&self) -> &str {
        self.method.as_deref().unwrap_or("GET")
    }

    pub fn scheme(&self) -> &str {
        self.scheme.as_deref().unwrap_or("http")
    }

    /// The path as sent; empty (the gRPC case) means `/`.
    pub fn path(&self) -> &str {
        self.path
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or("/")
    }
}

/// `status: 200` or `status: [200, 404]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Status {
    One(u16),
    AnyOf(Vec<u16>),
}

impl Status {
    pub fn codes(&self) -> Vec<u16> {
        match self {
            Status::One(code) => vec![*code],
            Status::AnyOf(codes) => codes.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Expect {
    #[serde(default)]
    pub status: Option<Status>,
    /// `<ns>/<Service>`, `<ns>/*` (any pod), or null (not checked).
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub response_headers: Option<HeaderExpect>,
    #[serde(default)]
    pub request_headers_at_backend: Option<HeaderExpect>,
    #[serde(default)]
    pub request_at_backend: Option<RequestAtBackend>,
    #[serde(default)]
    pub redirect: Option<Redirect>,
    /// Weighted cases: `<ns>/<Service>` → expected fraction.
    #[serde(default)]
    pub distribution: Option<BTreeMap<String, f64>>,
    #[serde(default)]
    pub sampling: Option<Sampling>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Expect {
    /// The accepted status codes (`[200]` when unset, as upstream defaults).
    pub fn status_codes(&self) -> Vec<u16> {
        self.status
            .as_ref()
            .map(Status::codes)
            .unwrap_or_else(|| vec![200])
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct HeaderExpect {
    #[serde(default)]
    pub present: BTreeMap<String, String>,
    #[serde(default)]
    pub absent: Vec<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RequestAtBackend {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub enforced_by_upstream_mesh_harness: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Expected `Location` parts of a 3xx; `None` parts take the README's defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct Redirect {
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Sampling {
    #[serde(default = "default_requests")]
    pub requests: u32,
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    #[serde(default = "default_tolerance")]
    pub tolerance_abs_fraction: f64,
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            requests: default_requests(),
            concurrency: default_concurrency(),
            tolerance_abs_fraction: default_tolerance(),
            attempts: default_attempts(),
            extra: Extra::new(),
        }
    }
}

fn default_requests() -> u32 {
    500
}
fn default_concurrency() -> u32 {
    10
}
fn default_tolerance() -> f64 {
    0.05
}
fn default_attempts() -> u32 {
    10
}

/// `conformance/gateway-api` of this checkout.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("conformance")
        .join("gateway-api")
}

/// Parses one case file.
pub fn parse_case_file(text: &str, origin: &Path) -> Result<CaseFile> {
    serde_yaml::from_str(text)
        .map_err(|e| HarnessError::Invalid(format!("case file {}: {e}", origin.display())))
}

/// Every `cases/mesh-*.yaml` under `dir`, sorted by file name.
pub fn load_mesh_cases(dir: &Path) -> Result<Vec<CaseFile>> {
    let cases_dir = dir.join("cases");
    let entries =
        std::fs::read_dir(&cases_dir).map_err(|e| HarnessError::file("listing", &cases_dir, e))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("mesh-") && n.ends_with(".yaml"))
        })
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .map_err(|e| HarnessError::file("reading", path, e))?;
            parse_case_file(&text, path)
        })
        .collect()
}
