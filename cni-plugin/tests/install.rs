//! `ambit-cni install` / `uninstall` run as the DaemonSet runs them, against
//! real conflists (tests/conflists/) in temp directories.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_ambit-cni");

/// A node's CNI directories: `bin/` and `net.d/`.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    /// `net.d` holds the named fixtures.
    fn with(fixtures: &[&str]) -> Self {
        let node = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir(node.bin()).unwrap();
        fs::create_dir(node.conf()).unwrap();
        for name in fixtures {
            fs::write(node.conf().join(name), fixture(name)).unwrap();
        }
        node
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("net.d")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.conf().join(name)
    }

    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.file(name)).unwrap()
    }

    fn json(&self, name: &str) -> Value {
        serde_json::from_str(&self.read(name)).unwrap()
    }

    fn command(&self, verb: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_remove("CNI_COMMAND")
            .env("RUST_LOG", "debug")
            .arg(verb)
            .arg("--cni-bin-dir")
            .arg(self.bin())
            .arg("--cni-conf-dir")
            .arg(self.conf())
            .args(extra);
        cmd
    }

    fn run(&self, verb: &str, extra: &[&str]) -> Output {
        let out = self.command(verb, extra).output().unwrap();
        eprintln!(
            "{verb} {extra:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn install(&self) -> Output {
        let out = self.run("install", &["--enroll-socket", "/run/ambit/enroll.sock"]);
        assert!(out.status.success());
        out
    }

    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.conf())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/conflists")
        .join(name);
    fs::read_to_string(path).unwrap()
}

fn types(conf: &Value) -> Vec<&str> {
    conf["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bridge_conflist_gets_ambit_last_and_the_binary() {
    let node = Node::with(&["10-containerd-net.conflist"]);
    // A later file is not what the runtime uses: left alone.
    fs::write(
        node.file("99-other.conflist"),
        fixture("10-calico.conflist"),
    )
    .unwrap();
    node.install();

    let conf = node.json("10-containerd-net.conflist");
    assert_eq!(types(&conf), ["bridge", "portmap", "ambit-cni"]);
    assert_eq!(
        conf["plugins"][2],
        json!({"type": "ambit-cni", "enrollSocket": "/run/ambit/enroll.sock"})
    );
    let original: Value = serde_json::from_str(&fixture("10-containerd-net.conflist")).unwrap();
    assert_eq!(conf["plugins"][0], original["plugins"][0]);
    assert_eq!(
        conf.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["cniVersion", "name", "plugins"]
    );
    assert_eq!(
        node.read("99-other.conflist"),
        fixture("10-calico.conflist")
    );
    // No temp files left behind.
    assert_eq!(
        node.files(),
        ["10-containerd-net.conflist", "99-other.conflist"]
    );

    let binary = node.bin().join("ambit-cni");
    assert_eq!(fs::read(&binary).unwrap(), fs::read(BIN).unwrap());
    let mode = fs::metadata(&binary).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    // The installed binary is a working plugin.
    let version = Command::new(&binary)
        .env("CNI_COMMAND", "VERSION")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains("1.1.0"));
}

#[test]
fn multi_plugin_lists_are_idempotent_and_uninstall_restores_them() {
    for name in ["10-calico.conflist", "10-flannel.conflist"] {
        let node = Node::with(&[name]);
        fs::set_permissions(node.file(name), fs::Permissions::from_mode(0o600)).unwrap();
        node.install();
        let conf = node.json(name);
        let expected: &[&str] = if name.contains("calico") {
            &["calico", "bandwidth", "portmap", "ambit-cni"]
        } else {
            &["flannel", "portmap", "ambit-cni"]
        };
        assert_eq!(types(&conf), expected);
        let mode = fs::metadata(node.file(name)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "file mode not kept");

        // Second install: byte-identical, not even rewritten.
        let before = fs::read(node.file(name)).unwrap();
        let mtime = fs::metadata(node.file(name)).unwrap().modified().unwrap();
        let bin_mtime = fs::metadata(node.bin().join("ambit-cni"))
            .unwrap()
            .modified()
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let out = node.install();
        assert!(stderr(&out).contains("already chains ambit-cni"));
        assert_eq!(fs::read(node.file(name)).unwrap(), before);
        let meta = fs::metadata(node.file(name)).unwrap();
        assert_eq!(meta.modified().unwrap(), mtime);
        let bin_meta = fs::metadata(node.bin().join("ambit-cni")).unwrap();
        assert_eq!(bin_meta.modified().unwrap(), bin_mtime);

        // Uninstall gives back the original file, byte for byte.
        let out = node.run("uninstall", &[]);
        assert!(out.status.success());
        assert_eq!(node.read(name), fixture(name));
        assert!(!node.bin().join("ambit-cni").exists());
        // And again: nothing to do, still fine.
        let out = node.run("uninstall", &[]);
        assert!(out.status.success());
        assert!(stderr(&out).contains("nothing to remove"));
    }
}

#[test]
fn single_conf_is_turned_into_a_conflist() {
    let node = Node::with(&["10-mynet.conf"]);
    node.install();
    assert_eq!(node.files(), ["10-mynet.conflist"]);
    let conf = node.json("10-mynet.conflist");
    assert_eq!(conf["name"], "mynet");
    assert_eq!(conf["cniVersion"], "0.4.0");
    assert_eq!(types(&conf), ["bridge", "ambit-cni"]);
    let original: Value = serde_json::from_str(&fixture("10-mynet.conf")).unwrap();
    assert_eq!(conf["plugins"][0], original);

    let before = node.read("10-mynet.conflist");
    node.install();
    assert_eq!(node.read("10-mynet.conflist"), before);

    // The primary CNI writes its .conf again: it sorts first, so it is
    // converted again, replacing the list from the first conversion.
    fs::write(node.file("10-mynet.conf"), fixture("10-mynet.conf")).unwrap();
    node.install();
    assert_eq!(node.files(), ["10-mynet.conflist"]);

    assert!(node.run("uninstall", &[]).status.success());
    assert_eq!(types(&node.json("10-mynet.conflist")), ["bridge"]);
}

#[test]
fn a_foreign_conflist_blocks_conversion() {
    let node = Node::with(&["10-mynet.conf"]);
    fs::write(
        node.file("10-mynet.conflist"),
        fixture("10-calico.conflist"),
    )
    .unwrap();
    let out = node.run("install", &[]);
    assert!(!out.status.success());
    let msg = stderr(&out);
    assert!(
        msg.contains("10-mynet.conflist exists and is not one ambit-cni wrote"),
        "{msg}"
    );
    assert_eq!(node.read("10-mynet.conf"), fixture("10-mynet.conf"));
    assert_eq!(
        node.read("10-mynet.conflist"),
        fixture("10-calico.conflist")
    );
}

#[test]
fn an_existing_entry_is_updated_in_place() {
    let node = Node::with(&[]);
    let conf = json!({"cniVersion": "1.0.0", "name": "n", "plugins": [
        {"type": "ptp"}, {"type": "ambit-cni", "enrollSocket": "/old"}, {"type": "bandwidth"}
    ]});
    fs::write(node.file("10-ptp.conflist"), conf.to_string()).unwrap();
    let out = node.run(
        "install",
        &[
            "--enroll-socket",
            "/new",
            "--rules-backend",
            "iptables",
            "--log-level",
            "debug",
        ],
    );
    assert!(out.status.success());
    let conf = node.json("10-ptp.conflist");
    assert_eq!(types(&conf), ["ptp", "ambit-cni", "bandwidth"]);
    assert_eq!(
        conf["plugins"][1],
        json!({"type": "ambit-cni", "enrollSocket": "/new", "rulesBackend": "iptables", "logLevel": "debug"})
    );
}

#[test]
fn a_malformed_primary_is_left_untouched_and_named() {
    let node = Node::with(&["10-calico.conflist"]);
    fs::write(node.file("05-broken.conflist"), "{\"plugins\": [").unwrap();
    let out = node.run("install", &[]);
    assert!(!out.status.success());
    let msg = stderr(&out);
    assert!(
        msg.contains("05-broken.conflist is not a usable CNI config"),
        "{msg}"
    );
    assert!(msg.contains("left it untouched"), "{msg}");
    assert_eq!(node.read("05-broken.conflist"), "{\"plugins\": [");
    assert_eq!(
        node.read("10-calico.conflist"),
        fixture("10-calico.conflist")
    );

    // Uninstall works around it (and reports it).
    let out = node.run("uninstall", &[]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("05-broken.conflist"));
}

#[test]
fn missing_config_dirs_and_bad_versions_are_clear_errors() {
    let node = Node::with(&[]);
    let out = node.run("install", &[]);
    assert!(!out.status.success());
    let msg = stderr(&out);
    assert!(
        msg.contains("no CNI network config") && msg.contains("net.d"),
        "{msg}"
    );

    fs::write(
        node.file("10-old.conf"),
        r#"{"cniVersion": "0.2.0", "name": "x", "type": "bridge"}"#,
    )
    .unwrap();
    let out = node.run("install", &[]);
    assert!(
        stderr(&out).contains("cniVersion \"0.2.0\""),
        "{}",
        stderr(&out)
    );
    assert_eq!(node.files(), ["10-old.conf"]);

    fs::remove_dir_all(node.conf()).unwrap();
    let out = node.run("install", &[]);
    assert!(
        stderr(&out).contains("does not exist; pass the directory"),
        "{}",
        stderr(&out)
    );
    fs::remove_dir_all(node.bin()).unwrap();
    let out = node.run("install", &[]);
    assert!(stderr(&out).contains("--cni-bin-dir"), "{}", stderr(&out));
    assert!(node.run("uninstall", &[]).status.success());

    let out = node.run("install", &["--rules-backend", "ipchains"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("ipchains"));
}

#[test]
fn a_symlinked_config_is_edited_where_it_points() {
    let node = Node::with(&[]);
    let real = node.dir.path().join("real.conflist");
    fs::write(&real, fixture("10-flannel.conflist")).unwrap();
    std::os::unix::fs::symlink(&real, node.file("10-flannel.conflist")).unwrap();
    node.install();
    let link = fs::symlink_metadata(node.file("10-flannel.conflist")).unwrap();
    assert!(link.file_type().is_symlink());
    let conf: Value = serde_json::from_str(&fs::read_to_string(&real).unwrap()).unwrap();
    assert_eq!(types(&conf), ["flannel", "portmap", "ambit-cni"]);
}

/// `install --watch` in the background, killed on drop if still running.
/// `ambit-cni install --watch` running in the background, its log collected as it is written so
/// a test can wait for what it says instead of sleeping.
struct Watcher {
    child: Option<Child>,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Watcher {
    fn start(node: &Node, extra: &[&str]) -> Self {
        let mut args = vec!["--watch", "--poll-interval-ms", "20"];
        args.extend_from_slice(extra);
        let mut child = node
            .command("install", &args)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Self {
            child: Some(child),
            log,
            reader: Some(reader),
        }
    }

    fn wait_for_log(&self, needle: &str) {
        eventually(&format!("log line {needle:?}"), || {
            self.log.lock().unwrap().contains(needle)
        });
    }

    /// SIGTERM, then the exit status and the log.
    fn stop(mut self) -> (bool, String) {
        let mut child = self.child.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        let log = self.log.lock().unwrap().clone();
        (status.success(), log)
    }
}

fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn chains_ambit(node: &Node, name: &str) -> bool {
    fs::read_to_string(node.file(name))
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .is_some_and(|conf| types(&conf).last() == Some(&"ambit-cni"))
}

#[test]
fn watch_reinserts_after_rewrites_and_uninstalls_on_sigterm() {
    let node = Node::with(&[]);
    let watcher = Watcher::start(&node, &["--uninstall-on-exit"]);
    // No config yet: it says so once and waits for the primary CNI.
    watcher.wait_for_log("no CNI network config");
    fs::write(
        node.file("10-calico.conflist"),
        fixture("10-calico.conflist"),
    )
    .unwrap();
    eventually("first insert", || chains_ambit(&node, "10-calico.conflist"));
    assert!(node.bin().join("ambit-cni").exists());

    // The primary CNI rewrites its file without us.
    fs::write(
        node.file("10-calico.conflist"),
        fixture("10-calico.conflist"),
    )
    .unwrap();
    eventually("re-insert", || chains_ambit(&node, "10-calico.conflist"));

    // A new primary appears (sorts first).
    fs::write(
        node.file("05-flannel.conflist"),
        fixture("10-flannel.conflist"),
    )
    .unwrap();
    eventually("insert into new primary", || {
        chains_ambit(&node, "05-flannel.conflist")
    });

    // The binary is deleted: it comes back.
    fs::remove_file(node.bin().join("ambit-cni")).unwrap();
    eventually("binary back", || node.bin().join("ambit-cni").exists());

    let (ok, log) = watcher.stop();
    assert!(ok, "{log}");
    assert!(log.contains("stopping"), "{log}");
    assert!(log.contains("no CNI network config"), "{log}");
    assert_eq!(
        log.matches("no CNI network config").count(),
        1,
        "error repeated: {log}"
    );
    assert_eq!(
        node.read("10-calico.conflist"),
        fixture("10-calico.conflist")
    );
    assert_eq!(
        node.read("05-flannel.conflist"),
        fixture("10-flannel.conflist")
    );
    assert!(!node.bin().join("ambit-cni").exists());
}

#[test]
fn watch_keeps_the_entry_on_sigterm_by_default() {
    let node = Node::with(&["10-mynet.conf"]);
    let watcher = Watcher::start(&node, &[]);
    eventually("conversion", || chains_ambit(&node, "10-mynet.conflist"));
    let (ok, log) = watcher.stop();
    assert!(ok, "{log}");
    assert!(chains_ambit(&node, "10-mynet.conflist"));
    assert!(node.bin().join("ambit-cni").exists());
}
