//! ztunnel's HTTP ports as seen from its node (they listen on the node's loopback): admin
//! (`/config_dump` on 15000), metrics (15020) and readiness (15021).

use std::time::{Duration, Instant};

use ztunnel::dump::ConfigDump;

use crate::cluster::Cluster;
use crate::error::{HarnessError, Result};

/// ztunnel's admin port (DESIGN §3).
pub const ADMIN_PORT: u16 = 15000;

/// GETs `path` from port `port` on node `node`'s loopback and returns the body.
pub fn node_http_get(cluster: &Cluster, node: usize, port: u16, path: &str) -> Result<String> {
    let app = crate::testapp::TestApp::locate()?;
    let address = format!("127.0.0.1:{port}");
    cluster.node(node).exec(
        app.path(),
        ["http-get", "--connect", &address, "--path", path, "--body"],
    )
}

/// `/config_dump` of node `node`'s ztunnel, parsed.
pub fn node_config_dump(cluster: &Cluster, node: usize) -> Result<ConfigDump> {
    let body = node_http_get(cluster, node, ADMIN_PORT, "/config_dump")?;
    serde_json::from_str(&body).map_err(|e| {
        HarnessError::Invalid(format!(
            "config_dump is not the ConfigDump this harness knows ({e}): {body}"
        ))
    })
}

/// Polls node `node`'s `/config_dump` until `ready` holds for it, up to `timeout`.
pub fn wait_for_node_dump(
    cluster: &Cluster,
    node: usize,
    what: &str,
    timeout: Duration,
    ready: impl Fn(&ConfigDump) -> bool,
) -> Result<ConfigDump> {
    let deadline = Instant::now() + timeout;
    loop {
        let dump = node_config_dump(cluster, node)?;
        if ready(&dump) {
            return Ok(dump);
        }
        if Instant::now() > deadline {
            return Err(HarnessError::Invalid(format!(
                "timed out after {timeout:?} waiting until {what}; last config_dump: {}",
                as_json(&dump)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The dump as ztunnel served it, for error messages and findings.
pub fn as_json<T: serde::Serialize + std::fmt::Debug>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| format!("{value:?}"))
}
