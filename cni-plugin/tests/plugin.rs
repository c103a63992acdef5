//! Runs the real `ambit-cni` binary against a fake ztunnel (capture's
//! enrollment server) and a throwaway pod netns, as a container runtime would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use capture::enroll::{serve, EnrollListener, EnrollRequest, Reply};
use capture::rules::{self, CheckError, Iptables, RuleOptions, RulesBackend};
use capture::testing::TestNetns;
use serde_json::{json, Value};

const PREV_RESULT: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],
    "ips":[{"address":"198.18.40.5/24","gateway":"198.18.40.1","interface":0}],"dns":{}}"#;

/// A stand-in ztunnel: answers by pod namespace ("ambient" → ENROLLED,
/// "plain" → NOT_AMBIENT, anything else → refused) and records requests.
struct FakeZtunnel {
    _runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    socket: PathBuf,
    seen: Arc<Mutex<Vec<String>>>,
}

impl FakeZtunnel {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("enroll.sock");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = runtime
            .block_on(async { EnrollListener::bind(&socket) })
            .unwrap();
        let record = seen.clone();
        runtime.spawn(serve(listener, move |request| {
            let record = record.clone();
            async move {
                let (line, reply) = match request {
                    EnrollRequest::Add { pod, netns } => {
                        let reply = match pod.namespace.as_str() {
                            "ambient" => Reply::Enrolled { capture_dns: false },
                            "plain" => Reply::NotAmbient,
                            _ => Reply::Error("pod unknown to ztunnel".into()),
                        };
                        (
                            format!(
                                "add {}/{} {} {}",
                                pod.namespace,
                                pod.name,
                                pod.uid,
                                netns.inode()
                            ),
                            reply,
                        )
                    }
                    EnrollRequest::Delete { uid } => (format!("delete {uid}"), Reply::Done),
                    EnrollRequest::SnapshotDone => ("snapshot".into(), Reply::Done),
                };
                record.lock().unwrap().push(line);
                reply
            }
        }));
        Self {
            _runtime: runtime,
            _dir: dir,
            socket,
            seen,
        }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

struct Output {
    ok: bool,
    json: Value,
}

fn config(socket: &Path, extra: Value) -> String {
    let mut conf = json!({
        "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "ambit-cni",
        "enrollSocket": socket, "enrollTimeoutMs": 3000, "logLevel": "debug",
        "prevResult": serde_json::from_str::<Value>(PREV_RESULT).unwrap(),
    });
    for (k, v) in extra.as_object().unwrap() {
        conf[k] = v.clone();
    }
    conf.to_string()
}

fn pod_args(namespace: &str) -> String {
    format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME=web-0;K8S_POD_UID=uid-{namespace}")
}

fn cni(command: &str, netns: Option<&str>, args: &str, stdin: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ambit-cni"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "c0ffee")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env("CNI_ARGS", args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(netns) = netns {
        cmd.env("CNI_NETNS", netns);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let json = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}"))
    };
    eprintln!(
        "{command}: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Output {
        ok: out.status.success(),
        json,
    }
}

fn assert_error(out: &Output, code: u64, words: &str) {
    assert!(!out.ok, "expected failure, got {}", out.json);
    assert_eq!(out.json["code"], code, "{}", out.json);
    assert_eq!(out.json["cniVersion"], "1.0.0");
    let msg = out.json["msg"].as_str().unwrap();
    assert!(msg.contains(words), "{words:?} not in {msg:?}");
}

fn table_missing(pod: &TestNetns) -> bool {
    matches!(rules::check(pod.netns()), Err(CheckError::Missing(m)) if m.table_missing)
}

#[test]
fn ambient_pod_add_check_del() {
    let ztunnel = FakeZtunnel::start();
    let pod = TestNetns::new("cni");
    let log = tempfile::NamedTempFile::new().unwrap();
    let conf = config(&ztunnel.socket, json!({"logFile": log.path()}));

    let out = cni("ADD", Some(&pod.path()), &pod_args("ambient"), &conf);
    assert!(out.ok, "{}", out.json);
    assert_eq!(
        out.json,
        serde_json::from_str::<Value>(PREV_RESULT).unwrap(),
        "prevResult unchanged"
    );
    rules::check(pod.netns()).unwrap();
    assert_eq!(
        ztunnel.seen(),
        vec![format!(
            "add ambient/web-0 uid-ambient {}",
            pod.netns().inode()
        )]
    );
    let logged = std::fs::read_to_string(log.path()).unwrap();
    assert!(logged.contains("pod enrolled and captured"), "{logged}");

    assert!(cni("CHECK", Some(&pod.path()), &pod_args("ambient"), &conf).ok);
    pod_nft(&pod, &["flush", "chain", "inet", "ambit", "output"]);
    let out = cni("CHECK", Some(&pod.path()), &pod_args("ambient"), &conf);
    assert_error(&out, 102, "ambit:out-redirect");

    let out = cni("DEL", Some(&pod.path()), &pod_args("ambient"), &conf);
    assert!(out.ok && out.json.is_null(), "{}", out.json);
    assert!(table_missing(&pod), "DEL left rules behind");
    assert_eq!(ztunnel.seen().last().unwrap(), "delete uid-ambient");
}

/// The same life cycle on the iptables backend, chosen in the config (and
/// by auto-detection when nft does not work).
#[test]
fn ambient_pod_with_iptables_backend() {
    let ztunnel = FakeZtunnel::start();
    for extra in [
        json!({"rulesBackend": "iptables"}),
        json!({"rulesBackend": "auto", "nftPath": "/bin/false"}),
    ] {
        let pod = TestNetns::new("cni");
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut extra = extra;
        extra["logFile"] = json!(log.path());
        let conf = config(&ztunnel.socket, extra);
        let backend = Iptables::default();

        let out = cni("ADD", Some(&pod.path()), &pod_args("ambient"), &conf);
        assert!(out.ok, "{}", out.json);
        backend.check(pod.netns()).unwrap();
        assert!(table_missing(&pod), "nft rules installed too");
        let logged = std::fs::read_to_string(log.path()).unwrap();
        assert!(
            logged.contains("INFO")
                && logged.contains("capture rules backend backend=\"iptables\""),
            "{logged}"
        );

        assert!(cni("CHECK", Some(&pod.path()), &pod_args("ambient"), &conf).ok);
        let status = Command::new("ip")
            .args([
                "netns",
                "exec",
                pod.name(),
                "iptables",
                "-t",
                "nat",
                "-F",
                "AMBIT_OUTPUT",
            ])
            .status()
            .unwrap();
        assert!(status.success());
        let out = cni("CHECK", Some(&pod.path()), &pod_args("ambient"), &conf);
        assert_error(&out, 102, "ambit:out-redirect");

        let out = cni("DEL", Some(&pod.path()), &pod_args("ambient"), &conf);
        assert!(out.ok, "{}", out.json);
        let err = backend.check(pod.netns()).unwrap_err();
        assert!(
            matches!(&err, CheckError::Missing(m) if m.table_missing),
            "DEL left rules behind: {err}"
        );
    }
}

#[test]
fn non_ambient_and_non_kubernetes_pods_are_untouched() {
    let ztunnel = FakeZtunnel::start();
    let pod = TestNetns::new("cni");
    let conf = config(&ztunnel.socket, json!({}));

    let out = cni("ADD", Some(&pod.path()), &pod_args("plain"), &conf);
    assert!(out.ok, "{}", out.json);
    assert_eq!(
        out.json,
        serde_json::from_str::<Value>(PREV_RESULT).unwrap()
    );
    assert!(table_missing(&pod));
    assert!(cni("CHECK", Some(&pod.path()), &pod_args("plain"), &conf).ok);

    // No K8S_POD_* args: not even ztunnel is asked.
    let gone = config(Path::new("/nonexistent/enroll.sock"), json!({}));
    assert!(cni("ADD", Some(&pod.path()), "IgnoreUnknown=1", &gone).ok);
    assert!(table_missing(&pod));
    assert_eq!(ztunnel.seen().len(), 1);
}

#[test]
fn ztunnel_down_fails_add_with_11_but_del_succeeds() {
    let pod = TestNetns::new("cni");
    let dir = tempfile::tempdir().unwrap();
    let conf = config(&dir.path().join("enroll.sock"), json!({}));

    let out = cni("ADD", Some(&pod.path()), &pod_args("ambient"), &conf);
    assert_error(&out, 11, "ztunnel is not ready to enroll pod ambient/web-0");
    assert!(table_missing(&pod), "a failed ADD must not leave rules");

    let out = cni("STATUS", None, "", &conf);
    assert_error(&out, 50, "enroll.sock");

    // Rules from an earlier life; DEL removes them although ztunnel is gone.
    rules::apply(pod.netns(), &RuleOptions::default()).unwrap();
    let out = cni("DEL", Some(&pod.path()), &pod_args("ambient"), &conf);
    assert!(out.ok, "{}", out.json);
    assert!(table_missing(&pod));
    // DEL after the netns is gone, too.
    assert!(
        cni(
            "DEL",
            Some("/var/run/netns/abnosuchns"),
            &pod_args("ambient"),
            &conf
        )
        .ok
    );
    assert!(cni("DEL", None, &pod_args("ambient"), &conf).ok);
}

#[test]
fn refusal_and_rule_failure_fail_add_and_leave_nothing() {
    let ztunnel = FakeZtunnel::start();
    let pod = TestNetns::new("cni");
    let conf = config(&ztunnel.socket, json!({}));

    let out = cni("ADD", Some(&pod.path()), &pod_args("refuse"), &conf);
    assert_error(&out, 100, "pod unknown to ztunnel");
    assert!(table_missing(&pod));

    // nft fails: the enrollment is withdrawn and ADD fails.
    // (An explicit backend: with "auto" a broken nft falls back to iptables.)
    let broken = config(
        &ztunnel.socket,
        json!({"nftPath": "/bin/false", "rulesBackend": "nftables"}),
    );
    let out = cni("ADD", Some(&pod.path()), &pod_args("ambient"), &broken);
    assert_error(
        &out,
        101,
        "cannot install the capture rules for pod ambient/web-0",
    );
    assert_eq!(ztunnel.seen().last().unwrap(), "delete uid-ambient");
    assert!(table_missing(&pod));

    assert!(cni("STATUS", None, "", &conf).ok);
    assert!(cni("GC", None, "", &conf).ok);
}

#[test]
fn version_and_protocol_errors_from_the_binary() {
    let out = cni("VERSION", None, "", "");
    assert!(out.ok);
    assert_eq!(
        out.json["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );

    let conf = config(Path::new("/x.sock"), json!({"logLevel": 7}));
    let out = cni("ADD", Some("/var/run/netns/x"), &pod_args("ambient"), &conf);
    assert_error(&out, 7, "logLevel");

    let out = cni(
        "ADD",
        Some("/var/run/netns/x"),
        "K8S_POD_NAME",
        &config(Path::new("/x.sock"), json!({})),
    );
    assert_error(&out, 4, "CNI_ARGS");

    let out = cni("ADD", Some("/var/run/netns/x"), "", "{not json");
    assert!(!out.ok);
    assert_eq!(out.json["code"], 6);
}

fn pod_nft(pod: &TestNetns, args: &[&str]) {
    let status = Command::new("ip")
        .args(["netns", "exec", pod.name(), "nft"])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success());
}
