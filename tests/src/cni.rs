//! Invoking CNI plugins the way kubelet's runtime does (libcni's network-list algorithm), so
//! `ambit-cni` sees exactly what it would see on a real node:
//!
//! - ADD runs the plugins in list order; each gets its own config with `name` and `cniVersion`
//!   of the list injected, and `prevResult` = the result of the plugin before it.
//! - DEL runs them in reverse order; each gets the final ADD result as `prevResult`.
//! - Environment: CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH on
//!   top of the caller's environment; the config on stdin; the result (or error) as JSON on
//!   stdout.
//!
//! Plugins run inside the node's namespace (as kubelet runs in the host namespace of its node),
//! so the bridge they create and the host-side veth ends live in the node.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::cmd::failure_text;
use crate::error::{HarnessError, Result};
use crate::netns::Netns;

/// The CNI spec version of the lists we write; Debian's plugins (≥ 1.1) speak it.
pub const CNI_VERSION: &str = "1.0.0";

/// Env var overriding where plugins are looked up (colon-separated, like CNI_PATH).
pub const CNI_PATH_ENV: &str = "AMBIT_CNI_PATH";

/// A plugin should answer well within this; ambit-cni waits for ztunnel, so be generous.
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Plugin directories: `$AMBIT_CNI_PATH`, else Debian's /usr/lib/cni and the upstream
/// /opt/cni/bin.
pub fn default_cni_path() -> Vec<PathBuf> {
    match std::env::var_os(CNI_PATH_ENV) {
        Some(value) => std::env::split_paths(&value).collect(),
        None => vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")],
    }
}

/// A conflist: a named chain of plugin configs (each a JSON object with a `type`).
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkList {
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Value>,
}

impl NetworkList {
    pub fn to_json(&self) -> Value {
        json!({
            "cniVersion": self.cni_version,
            "name": self.name,
            "plugins": self.plugins,
        })
    }

    pub fn from_json(value: &Value) -> Result<NetworkList> {
        let invalid = |what: &str| HarnessError::Invalid(format!("CNI conflist: {what}"));
        let name = value["name"]
            .as_str()
            .ok_or_else(|| invalid("missing `name`"))?;
        let cni_version = value["cniVersion"]
            .as_str()
            .ok_or_else(|| invalid("missing `cniVersion`"))?;
        let plugins = value["plugins"]
            .as_array()
            .ok_or_else(|| invalid("missing `plugins` array"))?;
        if plugins.iter().any(|p| p["type"].as_str().is_none()) {
            return Err(invalid("every plugin needs a `type`"));
        }
        Ok(NetworkList {
            name: name.to_string(),
            cni_version: cni_version.to_string(),
            plugins: plugins.clone(),
        })
    }

    pub fn load(path: &Path) -> Result<NetworkList> {
        let text =
            std::fs::read_to_string(path).map_err(|e| HarnessError::file("reading", path, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| HarnessError::Encode {
            what: format!("CNI conflist {}", path.display()),
            message: e.to_string(),
        })?;
        NetworkList::from_json(&value)
    }

    /// Write as pretty JSON, atomically (a watcher such as the ambit-cni installer must never
    /// see half a file).
    pub fn store(&self, path: &Path) -> Result<()> {
        let text =
            serde_json::to_string_pretty(&self.to_json()).map_err(|e| HarnessError::Encode {
                what: "CNI conflist".into(),
                message: e.to_string(),
            })?;
        crate::manifests::write_atomic(path, text.as_bytes())
    }
}

/// Per-invocation facts kubelet passes in the environment.
#[derive(Debug, Clone)]
pub struct RuntimeConf {
    pub container_id: String,
    pub netns_path: PathBuf,
    pub ifname: String,
    /// CNI_ARGS, e.g. K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID, K8S_POD_INFRA_CONTAINER_ID.
    pub args: Vec<(String, String)>,
}

impl RuntimeConf {
    fn cni_args(&self) -> String {
        let pairs: Vec<String> = self.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.join(";")
    }
}

/// Runs plugin chains inside one namespace (the node's).
#[derive(Debug, Clone)]
pub struct CniRunner {
    pub cni_path: Vec<PathBuf>,
    pub exec_in: Netns,
    pub timeout: Duration,
}

impl CniRunner {
    /// ADD every plugin in order and return the final result.
    pub fn add(&self, list: &NetworkList, rt: &RuntimeConf) -> Result<Value> {
        self.add_timed(list, rt).map(|(result, _)| result)
    }

    /// [`add`](Self::add), also returning how long each plugin took (by its `type`, in order).
    pub fn add_timed(
        &self,
        list: &NetworkList,
        rt: &RuntimeConf,
    ) -> Result<(Value, Vec<(String, Duration)>)> {
        let mut prev: Option<Value> = None;
        let mut times = Vec::new();
        for plugin in &list.plugins {
            let started = std::time::Instant::now();
            let result = self.invoke("ADD", list, plugin, prev.as_ref(), rt)?;
            let plugin_type = plugin["type"].as_str().unwrap_or_default().to_string();
            times.push((plugin_type, started.elapsed()));
            prev = Some(result);
        }
        let result = prev.ok_or_else(|| {
            HarnessError::Invalid(format!("CNI list `{}` has no plugins", list.name))
        })?;
        Ok((result, times))
    }

    /// DEL every plugin in reverse order with the cached ADD result. Unlike libcni it goes on
    /// after a failure (teardown should remove as much as it can) and reports the first error.
    pub fn del(&self, list: &NetworkList, rt: &RuntimeConf, cached: Option<&Value>) -> Result<()> {
        let mut first_error = None;
        for plugin in list.plugins.iter().rev() {
            if let Err(error) = self.invoke("DEL", list, plugin, cached, rt) {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// CHECK every plugin in order with the cached ADD result.
    pub fn check(&self, list: &NetworkList, rt: &RuntimeConf, cached: &Value) -> Result<()> {
        for plugin in &list.plugins {
            self.invoke("CHECK", list, plugin, Some(cached), rt)?;
        }
        Ok(())
    }

    fn invoke(
        &self,
        command: &'static str,
        list: &NetworkList,
        plugin: &Value,
        prev: Option<&Value>,
        rt: &RuntimeConf,
    ) -> Result<Value> {
        let plugin_type = plugin["type"].as_str().unwrap_or_default().to_string();
        let binary = find_plugin(&plugin_type, &self.cni_path)?;
        let stdin = one_config(list, plugin, prev)?;
        let cni_path = std::env::join_paths(&self.cni_path)
            .map_err(|e| HarnessError::Invalid(format!("CNI path: {e}")))?;
        let mut cmd = self.exec_in.command(&binary);
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &rt.container_id)
            .env("CNI_NETNS", &rt.netns_path)
            .env("CNI_IFNAME", &rt.ifname)
            .env("CNI_ARGS", rt.cni_args())
            .env("CNI_PATH", cni_path);
        let out = crate::cmd::run_unchecked(&mut cmd, Some(&stdin), self.timeout)?;
        let error = |message: String| HarnessError::Cni {
            plugin: plugin_type.clone(),
            command,
            container_id: rt.container_id.clone(),
            message,
        };
        if !out.success {
            return Err(error(plugin_error_message(&out)));
        }
        if command != "ADD" {
            return Ok(Value::Null);
        }
        serde_json::from_str(&out.stdout)
            .map_err(|e| error(format!("result is not JSON ({e}): {}", out.stdout.trim())))
    }
}

/// The stdin of one plugin: its config plus the list's name and version and `prevResult`.
pub fn one_config(list: &NetworkList, plugin: &Value, prev: Option<&Value>) -> Result<Vec<u8>> {
    let mut conf: Map<String, Value> = plugin.as_object().cloned().ok_or_else(|| {
        HarnessError::Invalid(format!("CNI plugin config is not an object: {plugin}"))
    })?;
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    serde_json::to_vec(&Value::Object(conf)).map_err(|e| HarnessError::Encode {
        what: "CNI plugin config".into(),
        message: e.to_string(),
    })
}

/// The first directory in the CNI path that holds a plugin of this type.
pub fn find_plugin(plugin_type: &str, cni_path: &[PathBuf]) -> Result<PathBuf> {
    if !plugin_type.is_empty() && !plugin_type.contains('/') {
        for dir in cni_path {
            let candidate = dir.join(plugin_type);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(HarnessError::CniPluginNotFound {
        plugin: plugin_type.to_string(),
        searched: cni_path.to_vec(),
    })
}

/// CNI error JSON (`{"code":…,"msg":…,"details":…}`) as one line, with stderr appended.
fn plugin_error_message(out: &crate::cmd::Output) -> String {
    let parsed: Option<Value> = serde_json::from_str(out.stdout.trim()).ok();
    let mut message = match parsed {
        Some(err) if err.get("msg").is_some() => format!(
            "{} {} (code {})",
            err["msg"].as_str().unwrap_or_default(),
            err["details"].as_str().unwrap_or_default(),
            err["code"]
        ),
        _ => failure_text(out),
    };
    if !out.stderr.trim().is_empty() && !message.contains(out.stderr.trim()) {
        message.push_str("; stderr: ");
        message.push_str(out.stderr.trim());
    }
    message
}

/// The first IPv4 address (and prefix length) the result gives to `ifname` inside the sandbox.
pub fn result_ipv4(result: &Value, ifname: &str) -> Option<(Ipv4Addr, u8)> {
    let interfaces = result["interfaces"].as_array();
    let belongs = |ip: &Value| -> bool {
        // A result without interface indexes is still usable: take its first address.
        let Some(index) = ip["interface"].as_u64() else {
            return true;
        };
        let Some(iface) = interfaces.and_then(|list| list.get(usize::try_from(index).ok()?)) else {
            return false;
        };
        iface["name"] == ifname && iface.get("sandbox").is_some()
    };
    result["ips"]
        .as_array()?
        .iter()
        .filter(|ip| belongs(ip))
        .find_map(|ip| {
            let (addr, len) = ip["address"].as_str()?.split_once('/')?;
            Some((addr.parse().ok()?, len.parse().ok()?))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> NetworkList {
        NetworkList {
            name: "ambit".into(),
            cni_version: CNI_VERSION.into(),
            plugins: vec![
                json!({"type": "bridge", "bridge": "br0"}),
                json!({"type": "ambit-cni"}),
            ],
        }
    }

    #[test]
    fn one_config_injects_name_version_and_prev_result() {
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let bytes = one_config(&list(), &list().plugins[1], Some(&prev)).unwrap_or_default();
        let conf: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert_eq!(conf["type"], "ambit-cni");
        assert_eq!(conf["name"], "ambit");
        assert_eq!(conf["cniVersion"], "1.0.0");
        assert_eq!(conf["prevResult"], prev);
        let first = one_config(&list(), &list().plugins[0], None).unwrap_or_default();
        let first: Value = serde_json::from_slice(&first).unwrap_or_default();
        assert!(first.get("prevResult").is_none());
    }

    #[test]
    fn conflist_round_trips_and_rejects_typeless_plugins() {
        assert_eq!(NetworkList::from_json(&list().to_json()).ok(), Some(list()));
        let bad = json!({"name": "x", "cniVersion": "1.0.0", "plugins": [{"bridge": "b"}]});
        assert!(NetworkList::from_json(&bad).is_err());
    }

    #[test]
    fn picks_the_sandbox_interface_address() {
        let result = json!({
            "interfaces": [
                {"name": "br0", "mac": "aa"},
                {"name": "veth1", "mac": "bb"},
                {"name": "eth0", "mac": "cc", "sandbox": "/run/netns/p"}
            ],
            "ips": [
                {"address": "10.1.1.1/24", "interface": 0},
                {"address": "10.1.1.5/24", "gateway": "10.1.1.1", "interface": 2}
            ]
        });
        assert_eq!(
            result_ipv4(&result, "eth0"),
            Some((Ipv4Addr::new(10, 1, 1, 5), 24))
        );
        assert_eq!(result_ipv4(&result, "eth1"), None);
    }
}
