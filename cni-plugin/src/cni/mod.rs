//! The CNI protocol (spec 1.0/1.1): environment, network config on stdin,
//! results and error JSON. Pure functions, so every error path is a table
//! test (`tests.rs`); `main` only gathers the inputs and prints.
//!
//! The plugin's own keys in its conflist entry (all optional):
//!
//! ```json
//! { "type": "ambit-cni",
//!   "enrollSocket": "/var/run/ambit/enroll.sock",  // ztunnel's enrollment socket
//!   "enrollTimeoutMs": 10000,                      // connect and per-answer timeout
//!   "logLevel": "info",                            // error|warn|info|debug|trace
//!   "logFile": "/var/log/ambit-cni.log",           // default: stderr (runtime's log)
//!   "probeSourceIp": "169.254.7.127",              // default: 169.254.7.127 and its IPv6 twin
//!   "rulesBackend": "auto",                        // auto|nftables|iptables
//!   "nftPath": "/usr/sbin/nft" }                   // default: nft from PATH or /usr/sbin
//! ```
//!
//! `rulesBackend: auto` uses nftables when `nft list tables` works on the
//! node and iptables (whatever `iptables` is there) otherwise, and logs the
//! choice at info level on every call that touches rules.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use capture::rules::BackendChoice;
use serde::Deserialize;
use serde_json::Value;

#[cfg(test)]
mod tests;

/// Versions this plugin speaks; the last one is what VERSION reports.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
pub const LATEST_VERSION: &str = "1.1.0";

/// Error codes of the CNI spec, plus ours (100+).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// ztunnel answered, but refused to enroll the pod (or answered nonsense).
    pub const ENROLL_REFUSED: u32 = 100;
    /// The redirect rules could not be installed or read.
    pub const RULES_FAILED: u32 = 101;
    /// CHECK: the pod's capture rules are incomplete.
    pub const RULES_MISSING: u32 = 102;
}

/// A CNI error result: `msg` says what failed, `details` what to check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI error {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The error JSON the spec wants on stdout.
    pub fn to_json(&self, cni_version: &str) -> String {
        serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
        .to_string()
    }
}

fn env_err(msg: impl Into<String>) -> CniError {
    CniError::new(
        code::INVALID_ENV,
        msg,
        "the container runtime sets the CNI_* variables; check its CNI configuration",
    )
}

fn config_err(msg: impl Into<String>) -> CniError {
    CniError::new(
        code::INVALID_CONFIG,
        msg,
        "fix the ambit-cni entry in the CNI conflist",
    )
}

/// What the runtime asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Version,
    Add(PodCall),
    Del(PodCall),
    Check(PodCall),
    Status(NetConf),
    Gc(NetConf),
}

/// ADD, DEL or CHECK of one container.
#[derive(Debug, Clone, PartialEq)]
pub struct PodCall {
    pub config: NetConf,
    pub container_id: String,
    /// Always set for ADD and CHECK; DEL may come after the netns is gone.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `None` when not called by Kubernetes (no K8S_POD_* in CNI_ARGS).
    pub pod: Option<K8sPod>,
}

/// The pod, from CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8sPod {
    pub namespace: String,
    pub name: String,
    /// Older runtimes do not pass K8S_POD_UID; then the container id stands
    /// in, which ADD and DEL both see, so ztunnel gets a stable key.
    pub uid: String,
}

/// The network config on stdin, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub enroll_socket: PathBuf,
    pub enroll_timeout: Duration,
    pub log_level: tracing::Level,
    pub log_file: Option<PathBuf>,
    pub probe_source_ip: Option<IpAddr>,
    pub nft_path: Option<PathBuf>,
    pub rules_backend: BackendChoice,
    /// The previous plugin's result, passed through unchanged.
    pub prev_result: Option<Value>,
}

/// The config as written; unknown keys are ignored (runtimes add some).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    cni_version: Option<String>,
    name: Option<String>,
    enroll_socket: Option<PathBuf>,
    enroll_timeout_ms: Option<u64>,
    log_level: Option<String>,
    log_file: Option<PathBuf>,
    probe_source_ip: Option<String>,
    nft_path: Option<PathBuf>,
    rules_backend: Option<String>,
    prev_result: Option<Value>,
}

/// Parses the whole invocation from the environment and stdin.
pub fn parse(env: &HashMap<String, String>, stdin: &[u8]) -> Result<Request, CniError> {
    let get = |key: &str| env.get(key).map(String::as_str).filter(|v| !v.is_empty());
    let command = get("CNI_COMMAND").ok_or_else(|| env_err("CNI_COMMAND is not set"))?;
    let kind = match command {
        "VERSION" => return Ok(Request::Version),
        "ADD" | "DEL" | "CHECK" => command,
        "STATUS" => return Ok(Request::Status(parse_config(stdin)?)),
        "GC" => return Ok(Request::Gc(parse_config(stdin)?)),
        other => {
            return Err(env_err(format!(
                "CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"
            )))
        }
    };

    let container_id =
        get("CNI_CONTAINERID").ok_or_else(|| env_err("CNI_CONTAINERID is not set"))?;
    validate_container_id(container_id)?;
    let netns = get("CNI_NETNS").map(PathBuf::from);
    if netns.is_none() && kind != "DEL" {
        return Err(env_err(format!(
            "CNI_NETNS is not set (required for {kind})"
        )));
    }
    let ifname = get("CNI_IFNAME").ok_or_else(|| env_err("CNI_IFNAME is not set"))?;
    let pod = parse_cni_args(get("CNI_ARGS").unwrap_or(""), container_id)?;
    let config = parse_config(stdin)?;

    if kind != "DEL" && config.prev_result.is_none() {
        return Err(config_err(format!(
            "{kind} without prevResult: ambit-cni is a chained plugin; list it after the main \
             network plugin (e.g. bridge, ptp, calico) in the conflist"
        )));
    }
    if kind == "CHECK" && matches!(config.cni_version.as_str(), "0.3.0" | "0.3.1") {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "CHECK needs cniVersion 0.4.0 or later, the config says {}",
                config.cni_version
            ),
            "",
        ));
    }
    let call = PodCall {
        config,
        container_id: container_id.to_owned(),
        netns,
        ifname: ifname.to_owned(),
        pod,
    };
    Ok(match kind {
        "ADD" => Request::Add(call),
        "DEL" => Request::Del(call),
        _ => Request::Check(call),
    })
}

/// Same rule as the reference plugins: `[A-Za-z0-9][A-Za-z0-9_.-]*`.
fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        Ok(())
    } else {
        Err(env_err(format!(
            "CNI_CONTAINERID {id:?} is not a valid container id"
        )))
    }
}

/// `K1=V1;K2=V2`. Unknown keys are ignored.
fn parse_cni_args(args: &str, container_id: &str) -> Result<Option<K8sPod>, CniError> {
    let mut known: HashMap<&str, &str> = HashMap::new();
    for pair in args.split(';').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| env_err(format!("CNI_ARGS entry {pair:?} is not KEY=VALUE")))?;
        if key.is_empty() {
            return Err(env_err(format!("CNI_ARGS entry {pair:?} has an empty key")));
        }
        known.insert(key, value);
    }
    let field = |key: &str| known.get(key).copied().filter(|v| !v.is_empty());
    Ok(match (field("K8S_POD_NAMESPACE"), field("K8S_POD_NAME")) {
        (Some(namespace), Some(name)) => Some(K8sPod {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: field("K8S_POD_UID").unwrap_or(container_id).to_owned(),
        }),
        _ => None,
    })
}

/// Parses and validates the network config JSON.
pub fn parse_config(stdin: &[u8]) -> Result<NetConf, CniError> {
    let decode = |msg: String| {
        CniError::new(
            code::DECODE_FAILURE,
            msg,
            "the runtime must pass the network config as a JSON object on stdin",
        )
    };
    if stdin.iter().all(u8::is_ascii_whitespace) {
        return Err(decode("no network config on stdin".to_owned()));
    }
    let value: Value = serde_json::from_slice(stdin)
        .map_err(|e| decode(format!("network config is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(decode("network config is not a JSON object".to_owned()));
    }
    let raw: RawConf = serde_path_to_error::deserialize(value).map_err(|e| {
        config_err(format!(
            "invalid network config at {}: {}",
            e.path(),
            e.inner()
        ))
    })?;

    let cni_version = raw
        .cni_version
        .ok_or_else(|| config_err("network config has no cniVersion"))?;
    if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("incompatible CNI version: config is {cni_version:?}, ambit-cni supports {SUPPORTED_VERSIONS:?}"),
            "upgrade ambit-cni or set a supported cniVersion in the conflist",
        ));
    }
    let name = raw
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| config_err("network config has no name"))?;
    let log_level = match raw.log_level.as_deref().unwrap_or("info") {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "info" => tracing::Level::INFO,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        other => {
            return Err(config_err(format!(
                "logLevel {other:?} is not one of error, warn, info, debug, trace"
            )))
        }
    };
    let enroll_timeout = match raw.enroll_timeout_ms {
        None => capture::enroll::DEFAULT_TIMEOUT,
        Some(ms @ 1..=300_000) => Duration::from_millis(ms),
        Some(ms) => {
            return Err(config_err(format!(
                "enrollTimeoutMs {ms} is outside 1..=300000"
            )))
        }
    };
    let probe_source_ip = match raw.probe_source_ip {
        None => None,
        Some(ip) => Some(
            ip.parse()
                .map_err(|_| config_err(format!("probeSourceIp {ip:?} is not an IP address")))?,
        ),
    };
    let rules_backend = match raw.rules_backend.as_deref() {
        None => BackendChoice::Auto,
        Some(text) => text
            .parse()
            .map_err(|e| config_err(format!("rulesBackend: {e}")))?,
    };
    if let Some(prev) = &raw.prev_result {
        if !prev.is_object() {
            return Err(config_err("prevResult is not a JSON object"));
        }
        // Passed through as our result: a non-string version there would be ours to answer
        // with, and the runtime could not read it (found by fuzz/cni).
        if let Some(version) = prev.get("cniVersion").filter(|v| !v.is_string()) {
            return Err(config_err(format!(
                "prevResult.cniVersion {version} is not a string"
            )));
        }
    }
    Ok(NetConf {
        cni_version,
        name,
        enroll_socket: raw
            .enroll_socket
            .unwrap_or_else(|| capture::enroll::DEFAULT_SOCKET_PATH.into()),
        enroll_timeout,
        log_level,
        log_file: raw.log_file,
        probe_source_ip,
        nft_path: raw.nft_path,
        rules_backend,
        prev_result: raw.prev_result,
    })
}

/// The version to put in an error JSON: the config's if it is one we speak.
pub fn version_for_errors(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| LATEST_VERSION.to_owned())
}

/// The VERSION result.
pub fn version_json() -> String {
    serde_json::json!({ "cniVersion": LATEST_VERSION, "supportedVersions": SUPPORTED_VERSIONS })
        .to_string()
}

/// The ADD/CHECK result: `prevResult` unchanged (it is already in the
/// config's version; only a missing `cniVersion` is filled in).
pub fn pass_through(config: &NetConf) -> String {
    let mut result = config
        .prev_result
        .clone()
        .unwrap_or_else(|| serde_json::json!({}));
    if let Some(map) = result.as_object_mut() {
        map.entry("cniVersion")
            .or_insert_with(|| Value::String(config.cni_version.clone()));
    }
    result.to_string()
}

/// The source addresses an ambient pod exempts from capture: kubelet probes, which ztunnel
/// SNATs on the node to a dedicated link-local address (`capture::rules::probes`). Never the
/// node's gateway address: host-network pods and NodePort traffic come from there too, and
/// would reach the pod in clear. `probeSourceIp` overrides it for a node whose probes are
/// SNAT-ed to another dedicated address.
pub fn probe_sources(config: &NetConf) -> Vec<IpAddr> {
    match config.probe_source_ip {
        Some(ip) => vec![ip],
        None => capture::rules::probes::probe_sources(),
    }
}
