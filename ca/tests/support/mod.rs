//! What the flood tests share: a local-mode `ambit-ca serve` they can watch from outside (open
//! file descriptors and resident memory from /proc), a node that behaves, and the misbehaving
//! clients (see `attacks.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

pub mod attacks;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use certs::api::{CaClient, CaClientError, CreateCertificateRequest, NodeToken};
use certs::{KeyAndCsr, SpiffeId, TrustBundle};

pub const CA: &str = env!("CARGO_BIN_EXE_ambit-ca");
/// The binary under test; `AMBIT_CA_TEST_BINARY` points at another build (to reproduce a fixed
/// bug against an older one).
pub fn ca_binary() -> String {
    std::env::var("AMBIT_CA_TEST_BINARY").unwrap_or_else(|_| CA.to_owned())
}

pub const CART: &str = "spiffe://cluster.local/ns/shop/sa/cart";

const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: Pod
metadata:
  name: cart-0
  namespace: shop
  uid: 11111111-0000-0000-0000-000000000001
spec:
  nodeName: node-a
  serviceAccountName: cart
  containers: [{name: app, image: cart}]
status:
  podIP: 10.1.1.5
"#;

/// Thousands of sockets on both ends of loopback: lift the soft descriptor limit to the hard
/// one (the CA inherits it, so it is the CA's limits, not the kernel's, that are tested).
pub fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        soft >= 8192,
        "the flood tests need RLIMIT_NOFILE >= 8192 (hard limit is {hard}); raise it with ulimit -Hn"
    );
}

/// A running local-mode `ambit-ca serve`, killed on drop.
pub struct RunningCa {
    child: Child,
    pub address: SocketAddr,
    pub bundle: TrustBundle,
    log: PathBuf,
}

impl Drop for RunningCa {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RunningCa {
    /// Starts the CA with `env` (its limits, as flags' environment fallbacks).
    pub fn start(work: &Path, env: &[(&str, &str)]) -> RunningCa {
        let dir = work.join("ca");
        let init = Command::new(ca_binary())
            .args(["init", "--dir", dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        std::fs::write(work.join("tokens"), "node-a token-a\n").unwrap();
        std::fs::write(work.join("pods.yaml"), PODS).unwrap();
        let address = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let log = work.join("ca.log");
        let child = Command::new(ca_binary())
            .args(["serve", "--dir", dir.to_str().unwrap()])
            .args(["--listen", &address.to_string()])
            .args(["--tokens-file", work.join("tokens").to_str().unwrap()])
            .args(["--manifests", work.join("pods.yaml").to_str().unwrap()])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let bundle = TrustBundle::from_pem(
            "cluster.local",
            &std::fs::read(dir.join("ca.crt")).unwrap(),
            "ca.crt",
        )
        .unwrap();
        let ca = RunningCa {
            child,
            address,
            bundle,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(address).is_err() {
            assert!(
                Instant::now() < deadline,
                "ambit-ca did not start: {}",
                ca.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        ca
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (generously) for the CA to exit; its exit status, or `None` if it still runs.
    pub async fn wait_for_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many file descriptors the CA holds now.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|entries| entries.count())
            .unwrap_or(0)
    }

    /// The CA's resident memory in KiB.
    pub fn rss_kib(&self) -> usize {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    }

    /// A node that behaves (node-a, from 127.0.0.1) asks for the identity of a pod it runs.
    /// The client gives up after 10 s.
    pub async fn valid_node_request(&self) -> Result<(), CaClientError> {
        let client = CaClient::new(
            self.address.to_string(),
            &self.bundle,
            NodeToken::Value("token-a".to_owned()),
        )
        .unwrap();
        let id: SpiffeId = CART.parse().unwrap();
        let key = KeyAndCsr::generate(&id).unwrap();
        let request = CreateCertificateRequest {
            csr: key.csr_pem.clone(),
            identity: CART.to_owned(),
            validity_seconds: 0,
        };
        client.create_certificate(request).await.map(|_| ())
    }

    /// Waits (generously) until the CA holds at most `limit` descriptors; the count it ended at.
    pub async fn wait_for_fds_at_most(&self, limit: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let now = self.fd_count();
            if now <= limit || Instant::now() >= deadline {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Samples the CA's descriptor count and memory on its own thread, so peaks are seen even when
/// the test's runtime is busy with the flood.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    peak_fds: Arc<AtomicUsize>,
    peak_rss_kib: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    pub fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_fds = Arc::new(AtomicUsize::new(0));
        let peak_rss_kib = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, peak_fds, peak_rss_kib) =
                (stop.clone(), peak_fds.clone(), peak_rss_kib.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
                        peak_fds.fetch_max(entries.count(), Ordering::Relaxed);
                    }
                    let status =
                        std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                    let rss = status
                        .lines()
                        .find_map(|line| line.strip_prefix("VmRSS:"))
                        .and_then(|rest| rest.split_whitespace().next())
                        .and_then(|kib| kib.parse().ok())
                        .unwrap_or(0);
                    peak_rss_kib.fetch_max(rss, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Sampler {
            stop,
            peak_fds,
            peak_rss_kib,
            thread: Some(thread),
        }
    }

    pub fn peak_fds(&self) -> usize {
        self.peak_fds.load(Ordering::Relaxed)
    }

    pub fn peak_rss_kib(&self) -> usize {
        self.peak_rss_kib.load(Ordering::Relaxed)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The flood tests share the machine's two cores and its loopback: one at a time.
pub async fn one_flood_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    // tokio's mutex: held across awaits, and usable from each test's own runtime.
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}
