//! A real Kubernetes API server for tests: Debian's `etcd` plus the `kube-apiserver` 1.20.2 that
//! `scripts/kube-build.sh` builds into a cache, on 127.0.0.1 only, with token authentication,
//! Node+RBAC authorisation and service-account issuer keys; optionally `kube-controller-manager`
//! (ServiceAccounts and their tokens, Endpoints/EndpointSlices, namespace deletion).
//!
//! ```no_run
//! use ambit_tests::kube::KubeApiServer;
//! # fn main() -> ambit_tests::Result<()> {
//! let server = KubeApiServer::builder().user("alice", &["dev"]).start()?;
//! server.kubectl(&["create", "namespace", "shop"])?;
//! let alice = server.token("alice").unwrap_or_default();
//! assert!(!server.can_i(alice, "get", "secrets", Some("shop"))?);
//! # Ok(()) }
//! ```
//! Everything lives in one temp dir (on /dev/shm when there is one, so etcd's fsyncs are cheap)
//! and is removed, processes first, when the server is dropped, also while a test panics.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::cmd::{self, failure_text, Output, DEFAULT_TIMEOUT};
use crate::error::{HarnessError, Result};
use crate::process::{tail, Process, ProcessSpec};

mod binaries;
mod support;
pub use binaries::{
    kube_cache_dir, require_kube, KubeBinaries, CACHE_ENV, DEFAULT_CACHE, KUBE_VERSION,
};
use support::{
    etcd_healthy, free_ports, make_pki, random_token, sweep_stale, temp_base, write_file, Daemon,
};

/// Service-account token issuer, also the default API audience (as in a kubeadm cluster).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
pub const ADMIN_USER: &str = "ambit-admin";

/// A cold 1.20 API server bootstraps RBAC and priority levels before /readyz says ok; on two
/// busy cores that takes 10-30 s.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// kube-apiserver drains requests on SIGTERM; a few seconds suffice for a test server.
const STOP_GRACE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(250);
const DIR_PREFIX: &str = "ambit-kube-";

/// What to start; see [`KubeApiServer::builder`].
#[derive(Debug, Default, Clone)]
pub struct KubeApiServerBuilder {
    controller_manager: bool,
    garbage_collector: bool,
    users: Vec<(String, Vec<String>)>,
}

impl KubeApiServerBuilder {
    /// Also run kube-controller-manager. Without it no ServiceAccount exists by itself, so the
    /// ServiceAccount admission plugin is then disabled (it would reject every Pod).
    pub fn controller_manager(mut self) -> Self {
        self.controller_manager = true;
        self
    }

    /// Also run the garbage collector (implies [`Self::controller_manager`]): dependents are
    /// deleted with their owner, as in a real cluster.
    pub fn garbage_collector(mut self) -> Self {
        self.controller_manager = true;
        self.garbage_collector = true;
        self
    }

    /// A user with a static token (read back with [`KubeApiServer::token`]); no RBAC is granted.
    pub fn user(mut self, name: &str, groups: &[&str]) -> Self {
        self.users.push((
            name.to_string(),
            groups.iter().map(|g| g.to_string()).collect(),
        ));
        self
    }

    pub fn start(self) -> Result<KubeApiServer> {
        KubeApiServer::start_with(self)
    }
}

#[derive(Debug, Clone)]
struct StaticToken {
    token: String,
    user: String,
    groups: Vec<String>,
}

/// etcd + kube-apiserver (+ kube-controller-manager) on loopback. Dropping it stops them all and
/// deletes their data.
pub struct KubeApiServer {
    bins: KubeBinaries,
    controller_manager: Option<Daemon>,
    apiserver: Option<Daemon>,
    etcd: Option<Daemon>,
    with_controller_manager: bool,
    with_garbage_collector: bool,
    port: u16,
    etcd_port: u16,
    etcd_peer_port: u16,
    tokens: Vec<StaticToken>,
    // Held while this server lives, so a sweeper in another process knows the dir is in use.
    _owner: Flock<File>,
    // Last: the directory goes only after the processes using it.
    dir: tempfile::TempDir,
}

impl KubeApiServer {
    pub fn builder() -> KubeApiServerBuilder {
        KubeApiServerBuilder::default()
    }

    /// etcd + kube-apiserver, ready to serve, with an admin kubeconfig.
    pub fn start() -> Result<KubeApiServer> {
        Self::builder().start()
    }

    /// Like [`KubeApiServer::start`], plus kube-controller-manager.
    pub fn with_controller_manager() -> Result<KubeApiServer> {
        Self::builder().controller_manager().start()
    }

    fn start_with(builder: KubeApiServerBuilder) -> Result<KubeApiServer> {
        let bins = require_kube()?;
        let base = temp_base();
        sweep_stale(&base);
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir_in(&base)
            .map_err(|e| HarnessError::file("creating a temp dir in", &base, e))?;
        let lock_path = dir.path().join("owner.lock");
        let lock_file =
            File::create(&lock_path).map_err(|e| HarnessError::file("creating", &lock_path, e))?;
        let owner = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| HarnessError::file("locking", &lock_path, errno.into()))?;
        for sub in ["pki", "logs", "etcd"] {
            let path = dir.path().join(sub);
            std::fs::create_dir_all(&path).map_err(|e| HarnessError::file("creating", &path, e))?;
        }
        make_pki(&dir.path().join("pki"))?;

        let mut tokens = vec![StaticToken {
            token: random_token(),
            user: ADMIN_USER.to_string(),
            groups: vec!["system:masters".to_string()],
        }];
        if builder.controller_manager {
            // system:masters rather than the bootstrap role: without
            // --use-service-account-credentials the controllers act as this user.
            tokens.push(StaticToken {
                token: random_token(),
                user: "system:kube-controller-manager".to_string(),
                groups: vec!["system:masters".to_string()],
            });
        }
        tokens.extend(builder.users.into_iter().map(|(user, groups)| StaticToken {
            token: random_token(),
            user,
            groups,
        }));

        let mut server = KubeApiServer {
            bins,
            controller_manager: None,
            apiserver: None,
            etcd: None,
            with_controller_manager: builder.controller_manager,
            with_garbage_collector: builder.garbage_collector,
            port: 0,
            etcd_port: 0,
            etcd_peer_port: 0,
            tokens,
            _owner: owner,
            dir,
        };
        server.write_tokens()?;
        // Free ports are picked, released and then bound by the servers: another process may
        // take one in between, so a start that lost that race is retried on fresh ports.
        let mut attempt = 0;
        loop {
            attempt += 1;
            [server.port, server.etcd_port, server.etcd_peer_port] = free_ports()?;
            let admin = server.admin_token().to_string();
            server.write_kubeconfig(&server.kubeconfig_path(), &admin)?;
            match server.start_etcd().and_then(|()| server.start_apiserver()) {
                Ok(()) => break,
                Err(error) if attempt < 3 && server.lost_port_race() => {
                    eprintln!("ambit-tests: kube start attempt {attempt} lost a port race ({error}); retrying");
                    server.stop();
                    // etcd remembers its first peer URL; the next attempt starts a new member,
                    // and fresh logs so this attempt's bind error is not read again.
                    let data = server.dir.path().join("etcd");
                    let _ = std::fs::remove_dir_all(&data);
                    for log in ["etcd.log", "kube-apiserver.log"] {
                        let _ = std::fs::remove_file(server.dir.path().join("logs").join(log));
                    }
                    std::fs::create_dir_all(&data)
                        .map_err(|e| HarnessError::file("creating", &data, e))?;
                }
                Err(error) => return Err(error),
            }
        }
        if server.with_controller_manager {
            server.start_controller_manager()?;
        }
        Ok(server)
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Kubeconfig of the admin (group system:masters), trusting [`KubeApiServer::ca_cert_path`].
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// CA of the serving certificate (what a pod would find as `ca.crt`).
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.path().join("pki/ca.crt")
    }

    pub fn admin_token(&self) -> &str {
        // The admin is always the first token (start_with puts it there).
        self.tokens.first().map_or("", |t| t.token.as_str())
    }

    /// The static token of a user given to the builder or to [`KubeApiServer::add_user_token`].
    pub fn token(&self, user: &str) -> Option<&str> {
        self.tokens
            .iter()
            .find(|t| t.user == user)
            .map(|t| t.token.as_str())
    }

    /// A static token for a new user. 1.20 reads the token file only at start, so this
    /// restarts the API server (etcd and its data stay).
    pub fn add_user_token(&mut self, user: &str, groups: &[&str]) -> Result<String> {
        let token = random_token();
        self.tokens.push(StaticToken {
            token: token.clone(),
            user: user.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        });
        self.write_tokens()?;
        self.restart()?;
        Ok(token)
    }

    /// A kubeconfig at `dir/NAME.kubeconfig` for another identity, e.g. for a mesh component.
    pub fn kubeconfig_for_token(&self, name: &str, token: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(format!("{name}.kubeconfig"));
        self.write_kubeconfig(&path, token)?;
        Ok(path)
    }

    /// A kubeconfig for the ServiceAccount `namespace/name` (which must exist), with a token
    /// from the TokenRequest API: how a mesh component runs against this server as itself.
    pub fn kubeconfig_as(&self, namespace: &str, service_account: &str) -> Result<PathBuf> {
        let token = self.service_account_token(namespace, service_account, &[], None)?;
        self.kubeconfig_for_token(service_account, &token)
    }

    /// Runs `spec` on the host (no network namespace: it reaches this server on loopback),
    /// without colour or proxies, its output in the server's `logs/`; stopped when dropped.
    pub fn spawn_component(&self, spec: ProcessSpec) -> Result<Process> {
        let logs = self.dir.path().join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| HarnessError::file("creating", &logs, e))?;
        let spec = spec
            .env("NO_COLOR", "1")
            .env("HTTPS_PROXY", "")
            .env("https_proxy", "");
        Process::spawn(Command::new(spec.program()), &logs, "host", spec)
    }

    /// A service-account token from the TokenRequest API (the ServiceAccount must exist),
    /// optionally bound to a pod as a projected token is; valid for an hour.
    pub fn service_account_token(
        &self,
        namespace: &str,
        service_account: &str,
        audiences: &[&str],
        bound_pod: Option<(&str, &str)>,
    ) -> Result<String> {
        let mut spec = serde_json::json!({ "audiences": audiences, "expirationSeconds": 3600 });
        if let Some((name, uid)) = bound_pod {
            spec["boundObjectRef"] =
                serde_json::json!({ "kind": "Pod", "apiVersion": "v1", "name": name, "uid": uid });
        }
        let request = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec,
        });
        let path =
            format!("/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token");
        let out = self.kubectl_checked(
            None,
            &["create", "--raw", &path, "-f", "-"],
            Some(request.to_string().as_bytes()),
        )?;
        let response: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| HarnessError::Encode {
                what: format!("TokenRequest response {out:?}"),
                message: e.to_string(),
            })?;
        response["status"]["token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| HarnessError::Invalid(format!("TokenRequest returned no token: {out}")))
    }

    /// `kubectl ARGS…` as the admin; a non-zero exit is an error carrying kubectl's stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_checked(None, args, None)
    }

    /// `kubectl apply -f -` of a YAML or JSON document, as the admin.
    pub fn kubectl_apply(&self, manifest: &str) -> Result<String> {
        self.kubectl_checked(None, &["apply", "-f", "-"], Some(manifest.as_bytes()))
    }

    /// `kubectl ARGS…` with another bearer token (admin when `None`) and optional stdin; the
    /// caller judges the exit status (`auth can-i` exits 1 for "no").
    pub fn kubectl_output(
        &self,
        token: Option<&str>,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<Output> {
        let mut command = Command::new(&self.bins.kubectl);
        command
            .arg(format!("--kubeconfig={}", self.kubeconfig_path().display()))
            // Keep kubectl's discovery cache out of $HOME: it would outlive the server.
            .arg(format!(
                "--cache-dir={}",
                self.dir.path().join("kubectl-cache").display()
            ));
        if let Some(token) = token {
            command.arg(format!("--token={token}"));
        }
        command.args(args);
        cmd::run_unchecked(&mut command, stdin, DEFAULT_TIMEOUT)
    }

    /// `kubectl auth can-i VERB RESOURCE` for the holder of `token`.
    pub fn can_i(
        &self,
        token: &str,
        verb: &str,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<bool> {
        let mut args = vec!["auth", "can-i", verb, resource];
        if let Some(namespace) = namespace {
            args.extend(["--namespace", namespace]);
        }
        let out = self.kubectl_output(Some(token), &args, None)?;
        match out.stdout.trim() {
            "yes" => Ok(true),
            "no" => Ok(false),
            _ => Err(HarnessError::Command {
                command: format!("kubectl {}", args.join(" ")),
                status: out.status.clone(),
                stderr: failure_text(&out),
            }),
        }
    }

    /// Stop and start kube-apiserver on the same port with the same etcd data, as a control-plane
    /// upgrade does: watches see their connections drop and must resume.
    pub fn restart(&mut self) -> Result<()> {
        self.stop_apiserver();
        self.start_apiserver()
    }

    /// Stop only kube-apiserver (etcd keeps the data); [`KubeApiServer::start_apiserver`] brings
    /// it back, for tests that need the API server down for a while.
    pub fn stop_apiserver(&mut self) {
        if let Some(mut apiserver) = self.apiserver.take() {
            apiserver.stop();
        }
    }

    /// Start kube-apiserver (again) and wait until `/readyz` answers ok.
    pub fn start_apiserver(&mut self) -> Result<()> {
        if self.apiserver.is_some() {
            return Ok(());
        }
        let dir = self.dir.path();
        let pki = dir.join("pki");
        let mut args = vec![
            format!("--etcd-servers=http://127.0.0.1:{}", self.etcd_port),
            "--bind-address=127.0.0.1".to_string(),
            "--advertise-address=127.0.0.1".to_string(),
            format!("--secure-port={}", self.port),
            // 1.20 still opens an unauthenticated port 8080 unless told not to.
            "--insecure-port=0".to_string(),
            format!("--tls-cert-file={}", pki.join("apiserver.crt").display()),
            format!(
                "--tls-private-key-file={}",
                pki.join("apiserver.key").display()
            ),
            format!("--token-auth-file={}", dir.join("tokens.csv").display()),
            "--authorization-mode=Node,RBAC".to_string(),
            format!("--service-account-issuer={ISSUER}"),
            format!(
                "--service-account-key-file={}",
                pki.join("sa.pub").display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                pki.join("sa.key").display()
            ),
            format!("--api-audiences={ISSUER}"),
            "--service-cluster-ip-range=10.96.0.0/16".to_string(),
            // The manifests' DaemonSet is privileged; server-side dry runs must accept it.
            "--allow-privileged=true".to_string(),
            // The `kubernetes` Endpoints would say 127.0.0.1, which Endpoints validation refuses.
            "--endpoint-reconciler-type=none".to_string(),
            "--profiling=false".to_string(),
        ];
        if !self.with_controller_manager {
            args.push("--disable-admission-plugins=ServiceAccount".to_string());
        }
        let log = dir.join("logs/kube-apiserver.log");
        self.apiserver = Some(Daemon::spawn(
            "kube-apiserver",
            &self.bins.kube_apiserver,
            &args,
            &log,
        )?);
        self.wait_ready()
    }

    /// Stop everything (controller manager, API server, etcd); the data dir stays until drop.
    pub fn stop(&mut self) {
        for daemon in [
            self.controller_manager.take(),
            self.apiserver.take(),
            self.etcd.take(),
        ]
        .into_iter()
        .flatten()
        {
            let mut daemon = daemon;
            daemon.stop();
        }
    }

    /// The directory holding data, keys, kubeconfigs and `logs/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn kubectl_checked(
        &self,
        token: Option<&str>,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<String> {
        let out = self.kubectl_output(token, args, stdin)?;
        if out.success {
            Ok(out.stdout)
        } else {
            Err(HarnessError::Command {
                command: format!("kubectl {}", args.join(" ")),
                stderr: failure_text(&out),
                status: out.status,
            })
        }
    }

    fn start_etcd(&mut self) -> Result<()> {
        let client = format!("http://127.0.0.1:{}", self.etcd_port);
        let peer = format!("http://127.0.0.1:{}", self.etcd_peer_port);
        let args = vec![
            "--name=ambit".to_string(),
            format!("--data-dir={}", self.dir.path().join("etcd").display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=ambit={peer}"),
            "--initial-cluster-state=new".to_string(),
        ];
        let log = self.dir.path().join("logs/etcd.log");
        let mut etcd = Daemon::spawn("etcd", &self.bins.etcd, &args, &log)?;
        let deadline = Instant::now() + START_TIMEOUT;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.etcd_port));
        while !etcd_healthy(address) {
            etcd.fail_if_exited("etcd /health")?;
            if Instant::now() >= deadline {
                return Err(etcd.timeout("etcd /health", START_TIMEOUT));
            }
            std::thread::sleep(POLL);
        }
        self.etcd = Some(etcd);
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            // A TCP connect first: cheap, where each kubectl costs a process start.
            if TcpStream::connect_timeout(&address, POLL).is_ok() {
                let out = self.kubectl_output(None, &["get", "--raw", "/readyz"], None)?;
                // /readyz can answer ok a moment before the bootstrap controller has created
                // the `default` namespace (seen on a loaded machine): a cluster without it is
                // not ready for tests that use it.
                if out.success
                    && out.stdout.trim() == "ok"
                    && self
                        .kubectl_output(None, &["get", "namespace", "default", "-o", "name"], None)?
                        .success
                {
                    return Ok(());
                }
            }
            let Some(apiserver) = self.apiserver.as_mut() else {
                return Err(HarnessError::Invalid(
                    "kube-apiserver is not running".into(),
                ));
            };
            apiserver.fail_if_exited("kube-apiserver /readyz")?;
            if Instant::now() >= deadline {
                return Err(apiserver.timeout("kube-apiserver /readyz", START_TIMEOUT));
            }
            std::thread::sleep(POLL);
        }
    }

    fn start_controller_manager(&mut self) -> Result<()> {
        let token = self
            .token("system:kube-controller-manager")
            .unwrap_or_default()
            .to_string();
        let kubeconfig = self.kubeconfig_for_token("kube-controller-manager", &token)?;
        let pki = self.dir.path().join("pki");
        let mut controllers =
            "serviceaccount-token,serviceaccount,endpoint,endpointslice,namespace".to_string();
        if self.with_garbage_collector {
            controllers.push_str(",garbagecollector");
        }
        let args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--controllers={controllers}"),
            format!(
                "--service-account-private-key-file={}",
                pki.join("sa.key").display()
            ),
            format!("--root-ca-file={}", pki.join("ca.crt").display()),
            "--leader-elect=false".to_string(),
            // It needs no listener of its own: 0 turns off both its ports.
            "--port=0".to_string(),
            "--secure-port=0".to_string(),
            "--profiling=false".to_string(),
        ];
        let log = self.dir.path().join("logs/kube-controller-manager.log");
        let mut daemon = Daemon::spawn(
            "kube-controller-manager",
            &self.bins.kube_controller_manager,
            &args,
            &log,
        )?;
        // Ready when the default ServiceAccount has its token secret: from then on the
        // ServiceAccount admission plugin accepts pods.
        let what = "the default ServiceAccount's token secret";
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let out = self.kubectl_output(
                None,
                &[
                    "get",
                    "serviceaccount",
                    "default",
                    "--namespace=default",
                    "-o=jsonpath={.secrets[0].name}",
                ],
                None,
            )?;
            if out.success && !out.stdout.trim().is_empty() {
                break;
            }
            daemon.fail_if_exited(what)?;
            if Instant::now() >= deadline {
                return Err(daemon.timeout(what, START_TIMEOUT));
            }
            std::thread::sleep(POLL);
        }
        self.controller_manager = Some(daemon);
        Ok(())
    }

    fn write_tokens(&self) -> Result<()> {
        // token,user,uid,"group1,group2": the format of --token-auth-file.
        let text: String = self
            .tokens
            .iter()
            .map(|t| {
                format!(
                    "{},{},{},\"{}\"\n",
                    t.token,
                    t.user,
                    t.user,
                    t.groups.join(",")
                )
            })
            .collect();
        write_file(&self.dir.path().join("tokens.csv"), &text)
    }

    fn write_kubeconfig(&self, path: &Path, token: &str) -> Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: ambit-test\n  cluster:\n    \
             server: {}\n    certificate-authority: {}\nusers:\n- name: user\n  user:\n    \
             token: {token}\ncontexts:\n- name: ambit-test\n  context:\n    cluster: ambit-test\n    \
             user: user\ncurrent-context: ambit-test\n",
            self.url(),
            self.ca_cert_path().display()
        );
        write_file(path, &text)
    }

    fn lost_port_race(&self) -> bool {
        ["etcd.log", "kube-apiserver.log"].iter().any(|name| {
            std::fs::read_to_string(self.dir.path().join("logs").join(name))
                .is_ok_and(|log| log.contains("address already in use"))
        })
    }
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The temp dir goes with us: leave the API server's last words in the test output.
            if let Some(apiserver) = &self.apiserver {
                eprintln!(
                    "ambit-tests: kube-apiserver log tail:\n{}",
                    tail(&apiserver.log_text())
                );
            }
        }
        self.stop();
    }
}
