//! Driving `ambit-testapp` (src/bin/ambit-testapp.rs) from tests: locating the binary, starting
//! servers and running clients in a namespace, parsing what they print.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{HarnessError, Result};
use crate::netns::Netns;
use crate::process::{Process, ProcessSpec};

/// Env var naming the testapp binary explicitly.
pub const TESTAPP_ENV: &str = "AMBIT_TESTAPP";
const TESTAPP_NAME: &str = "ambit-testapp";

/// Where `ambit-testapp` is: `$AMBIT_TESTAPP`, else next to the running test binary (cargo puts
/// integration tests in target/<profile>/deps and binaries in target/<profile>). Integration
/// tests of this crate can also pass `env!("CARGO_BIN_EXE_ambit-testapp")` to [`TestApp::at`].
pub fn testapp_path() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(TESTAPP_ENV) {
        return Ok(PathBuf::from(path));
    }
    let exe =
        std::env::current_exe().map_err(|e| HarnessError::file("locating", "current_exe", e))?;
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(3)
        .map(|dir| dir.join(TESTAPP_NAME))
        .collect();
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or_else(|| {
            HarnessError::Invalid(format!(
                "{TESTAPP_NAME} not found in {candidates:?}: build it (cargo build -p ambit-tests) or set {TESTAPP_ENV}"
            ))
        })
}

/// What `ambit-testapp client` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoReport {
    pub sent: u64,
    pub received: u64,
    pub sent_sha256: String,
    pub received_sha256: String,
    /// The address the client connected to, as its socket saw it.
    pub peer: String,
}

impl EchoReport {
    /// Everything sent came back unchanged.
    pub fn intact(&self) -> bool {
        self.sent == self.received && self.sent_sha256 == self.received_sha256
    }

    pub fn parse(line: &str) -> Option<EchoReport> {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
        };
        Some(EchoReport {
            sent: field("sent")?.parse().ok()?,
            received: field("received")?.parse().ok()?,
            sent_sha256: field("sent_sha256")?,
            received_sha256: field("received_sha256")?,
            peer: field("peer")?,
        })
    }
}

/// The testapp binary, ready to run in namespaces.
#[derive(Debug, Clone)]
pub struct TestApp {
    path: PathBuf,
}

impl TestApp {
    pub fn locate() -> Result<TestApp> {
        testapp_path().map(TestApp::at)
    }

    pub fn at(path: impl Into<PathBuf>) -> TestApp {
        TestApp { path: path.into() }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Start a TCP echo server on `port` in `netns` and wait until it listens.
    pub fn echo_server(&self, netns: &Netns, port: u16) -> Result<Process> {
        self.server(netns, "echo", port, &[])
    }

    /// Start an HTTP/1.1 server answering every request with `body_bytes` bytes.
    pub fn http_server(&self, netns: &Netns, port: u16, body_bytes: usize) -> Result<Process> {
        self.server(
            netns,
            "http",
            port,
            &["--body-bytes".into(), body_bytes.to_string()],
        )
    }

    fn server(&self, netns: &Netns, mode: &str, port: u16, extra: &[String]) -> Result<Process> {
        let spec = ProcessSpec::new(&self.path)
            .name(format!("{mode}-{port}"))
            .args([mode, "--listen", &format!("0.0.0.0:{port}")])
            .args(extra);
        let mut process = netns.spawn(spec)?;
        process.wait_for_log("listening on", Duration::from_secs(10))?;
        Ok(process)
    }

    /// Start the fake upstream resolver (`dns-server`) on `listen` in `netns`, answering each
    /// `(name, ip)` and NXDOMAIN otherwise; waits until it listens.
    pub fn dns_server(
        &self,
        netns: &Netns,
        listen: SocketAddr,
        answers: &[(&str, std::net::IpAddr)],
    ) -> Result<Process> {
        let mut spec = ProcessSpec::new(&self.path)
            .name(format!("dns-server-{}", listen.port()))
            .args(["dns-server", "--listen", &listen.to_string()]);
        for (name, ip) in answers {
            spec = spec.args(["--answer".to_string(), format!("{name}={ip}")]);
        }
        let mut process = netns.spawn(spec)?;
        process.wait_for_log("listening on", Duration::from_secs(10))?;
        Ok(process)
    }

    /// Ask `server` for `name` (`kind`: A, AAAA, ...) from `netns`, over UDP or TCP.
    pub fn dns_query(
        &self,
        netns: &Netns,
        server: SocketAddr,
        name: &str,
        kind: &str,
        tcp: bool,
    ) -> Result<crate::dns::DnsAnswer> {
        let mut args = vec![
            "dns-query".to_string(),
            "--server".into(),
            server.to_string(),
            "--name".into(),
            name.into(),
            "--type".into(),
            kind.into(),
        ];
        if tcp {
            args.push("--tcp".into());
        }
        let stdout = netns.exec(&self.path, &args)?;
        crate::dns::DnsAnswer::parse(stdout.trim()).ok_or_else(|| {
            HarnessError::Invalid(format!(
                "unexpected ambit-testapp dns-query output: {stdout:?}"
            ))
        })
    }

    /// Send `bytes` bytes (or `text` repeated) to an echo server from `netns`.
    pub fn echo_client(
        &self,
        netns: &Netns,
        target: SocketAddr,
        bytes: u64,
        text: Option<&str>,
    ) -> Result<EchoReport> {
        let mut args = vec![
            "client".to_string(),
            "--connect".into(),
            target.to_string(),
            "--bytes".into(),
            bytes.to_string(),
        ];
        if let Some(text) = text {
            args.extend(["--text".to_string(), text.to_string()]);
        }
        let stdout = netns.exec(&self.path, &args)?;
        EchoReport::parse(stdout.trim()).ok_or_else(|| {
            HarnessError::Invalid(format!(
                "unexpected ambit-testapp client output: {stdout:?}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::EchoReport;

    #[test]
    fn parses_client_report() {
        let line =
            "sent=5 received=5 sent_sha256=ab received_sha256=ab peer=10.1.2.3:80 elapsed_ms=1";
        let report = EchoReport::parse(line);
        assert_eq!(
            report.as_ref().map(|r| r.peer.as_str()),
            Some("10.1.2.3:80")
        );
        assert!(report.is_some_and(|r| r.intact()));
        assert_eq!(EchoReport::parse("sent=1"), None);
    }
}
