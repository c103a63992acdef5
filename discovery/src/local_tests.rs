#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use identity::SpiffeId;

use super::*;
use crate::policy::{authorize, ConnectionAttrs, Decision};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

fn pod(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: shop}}
spec: {{nodeName: node-a, containers: [{{name: c}}]}}
status: {{podIP: '{ip}'}}
"
    )
}

fn config(paths: &[&Path]) -> LocalSourceConfig {
    let mut config = LocalSourceConfig::new(paths.iter().copied());
    config.poll_interval = Duration::from_millis(10);
    config
}

fn names(snapshot: &Snapshot) -> Vec<String> {
    snapshot.workloads().map(|w| w.name.clone()).collect()
}

#[test]
fn example_manifest_answers_the_proxies_questions() {
    let source = LocalSource::load(config(&[&testdata()])).unwrap();
    let snapshot = source.current();
    assert_eq!(snapshot.generation(), 1);

    let web0 = snapshot
        .workload_by_ip("10.0.1.5".parse().unwrap())
        .unwrap();
    assert_eq!(
        (web0.name.as_str(), web0.node.as_str()),
        ("web-0", "node-a")
    );
    assert!(snapshot.is_ambient(web0));
    let client = snapshot.workload("shop", "client").unwrap();
    assert!(!snapshot.is_ambient(client), "pod label `none` opts out");

    // The named targetPort resolves to a different container port on each pod.
    let (service, port) = snapshot
        .service_by_vip("10.96.0.10".parse().unwrap(), 80)
        .unwrap();
    let endpoints: Vec<String> = snapshot
        .endpoints_for(service, port)
        .iter()
        .map(|e| e.addr.to_string())
        .collect();
    assert_eq!(endpoints, vec!["10.0.1.5:8080", "10.0.2.5:8081"]);

    let client_id = client.identity("cluster.local").unwrap();
    assert_eq!(
        client_id.to_string(),
        "spiffe://cluster.local/ns/shop/sa/default"
    );
    let other_id = SpiffeId::new("cluster.local", "shop", "web").unwrap();
    let conn = |id, port| ConnectionAttrs {
        src_ip: "10.0.1.6".parse().unwrap(),
        src_identity: Some(id),
        dst_port: port,
    };
    let policies = || snapshot.policies_for(web0);
    assert_eq!(
        authorize(policies(), &conn(&client_id, 8080)),
        Decision::Allow
    );
    assert_eq!(
        authorize(policies(), &conn(&client_id, 9000)),
        Decision::NotAllowed
    );
    assert_eq!(
        authorize(policies(), &conn(&other_id, 8080)),
        Decision::NotAllowed
    );

    let on_a: Vec<_> = snapshot
        .service_accounts_on_node("node-a")
        .into_iter()
        .collect();
    assert_eq!(on_a, vec![("shop", "default"), ("shop", "web")]);
}

#[test]
fn initial_load_errors_prevent_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let message = LocalSource::load(config(&[&missing]))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("cannot read") && message.contains("nope.yaml"),
        "{message}"
    );

    let bad = dir.path().join("bad.yaml");
    fs::write(&bad, pod("web", "10.0.1.x")).unwrap();
    let message = LocalSource::load(config(&[&bad])).unwrap_err().to_string();
    assert!(
        message.contains("bad.yaml, document 1") && message.contains("status.podIP"),
        "{message}"
    );
}

#[test]
fn folders_read_manifests_in_name_order_and_skip_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| fs::write(dir.path().join(name), text).unwrap();
    write("b.yml", &pod("b", "10.0.0.2"));
    write("a.yaml", &pod("a", "10.0.0.1"));
    write(
        "c.json",
        r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}"#,
    );
    write(".a.yaml.swp", "garbage: [");
    write("notes.txt", "garbage: [");
    write("a.yaml~", "garbage: [");
    fs::create_dir(dir.path().join("sub")).unwrap();
    fs::write(dir.path().join("sub/x.yaml"), "garbage: [").unwrap();

    let files = manifest_files(dir.path()).unwrap();
    let file_names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(file_names, vec!["a.yaml", "b.yml", "c.json"]);
    let source = LocalSource::load(config(&[dir.path()])).unwrap();
    assert_eq!(names(&source.current()), vec!["a", "b"]);
}

#[test]
fn poll_publishes_good_edits_and_keeps_the_last_good_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    fs::write(&file, pod("one", "10.0.0.1")).unwrap();
    let source = LocalSource::load(config(&[&file])).unwrap();
    let mut updates = source.subscribe();
    assert_eq!(source.poll(), PollOutcome::Unchanged);
    assert!(!updates.has_changed().unwrap());

    fs::write(&file, pod("two", "10.0.0.2")).unwrap();
    assert_eq!(source.poll(), PollOutcome::Published(2));
    assert!(updates.has_changed().unwrap());
    assert_eq!(names(&updates.borrow_and_update()), vec!["two"]);

    // A broken edit is reported only once it is seen twice (it may be a file mid-write).
    fs::write(&file, pod("three", "10.0.0.x")).unwrap();
    assert_eq!(source.poll(), PollOutcome::Pending);
    assert!(source.last_error().is_none());
    assert_eq!(source.poll(), PollOutcome::Rejected);
    let error = source.last_error().unwrap().to_string();
    assert!(
        error.contains("app.yaml, document 1") && error.contains("status.podIP"),
        "{error}"
    );
    assert_eq!(
        source.poll(),
        PollOutcome::Unchanged,
        "reported once, not every poll"
    );
    assert_eq!(
        source.current().generation(),
        2,
        "last good snapshot stays in force"
    );
    assert_eq!(names(&source.current()), vec!["two"]);
    assert!(!updates.has_changed().unwrap());

    // Fixed: published, error cleared.
    fs::write(&file, pod("three", "10.0.0.3")).unwrap();
    assert_eq!(source.poll(), PollOutcome::Published(3));
    assert!(source.last_error().is_none());

    // Broken, then reverted to what is in force: nothing to publish, error cleared.
    fs::write(&file, "kind: [").unwrap();
    assert_eq!(source.poll(), PollOutcome::Pending);
    assert_eq!(source.poll(), PollOutcome::Rejected);
    fs::write(&file, pod("three", "10.0.0.3")).unwrap();
    assert_eq!(source.poll(), PollOutcome::Unchanged);
    assert!(source.last_error().is_none());
    assert_eq!(source.current().generation(), 3);
}

#[test]
fn a_file_caught_mid_write_is_not_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    fs::write(&file, pod("one", "10.0.0.1")).unwrap();
    let source = LocalSource::load(config(&[&file])).unwrap();
    let full = pod("two", "10.0.0.2");
    fs::write(&file, &full[..full.len() / 2]).unwrap();
    assert_eq!(source.poll(), PollOutcome::Pending);
    fs::write(&file, &full).unwrap();
    assert_eq!(source.poll(), PollOutcome::Published(2));
    assert!(source.last_error().is_none());
}

#[cfg(unix)]
#[test]
fn configmap_style_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    // A ConfigMap volume: app.yaml -> ..data/app.yaml, ..data -> ..v1; updates swap ..data.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir(root.join("..v1")).unwrap();
    fs::write(root.join("..v1/app.yaml"), pod("one", "10.0.0.1")).unwrap();
    symlink("..v1", root.join("..data")).unwrap();
    symlink("..data/app.yaml", root.join("app.yaml")).unwrap();
    let source = LocalSource::load(config(&[root])).unwrap();
    assert_eq!(names(&source.current()), vec!["one"]);

    fs::create_dir(root.join("..v2")).unwrap();
    fs::write(root.join("..v2/app.yaml"), pod("two", "10.0.0.2")).unwrap();
    symlink("..v2", root.join("..data_tmp")).unwrap();
    fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    fs::remove_dir_all(root.join("..v1")).unwrap();
    assert_eq!(source.poll(), PollOutcome::Published(2));
    assert_eq!(names(&source.current()), vec!["two"]);
}

/// Waits for `condition`, failing after a generous deadline; the poll interval is 10 ms, so
/// this normally returns within a few polls.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn watcher_reloads_live_and_survives_a_broken_edit() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    // Write via rename, as editors do, so the watcher never sees a half-written good file.
    let write = |text: String| {
        let tmp = dir.path().join(".app.yaml.tmp");
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, &file).unwrap();
    };
    write(pod("one", "10.0.0.1"));
    let source = LocalSource::load(config(&[dir.path()])).unwrap();
    let mut updates = source.subscribe();
    let watcher = source.spawn();

    write(pod("two", "10.0.0.2"));
    tokio::time::timeout(Duration::from_secs(10), updates.changed())
        .await
        .expect("a new snapshot within the deadline")
        .unwrap();
    let snapshot = updates.borrow_and_update().clone();
    assert_eq!(
        (snapshot.generation(), names(&snapshot)),
        (2, vec!["two".to_owned()])
    );

    write(pod("three", "not-an-ip"));
    eventually("the broken edit to be reported", || {
        source.last_error().is_some()
    })
    .await;
    assert_eq!(source.current().generation(), 2);
    assert!(!updates.has_changed().unwrap());

    write(pod("three", "10.0.0.3"));
    tokio::time::timeout(Duration::from_secs(10), updates.changed())
        .await
        .expect("recovery within the deadline")
        .unwrap();
    assert_eq!(names(&updates.borrow_and_update()), vec!["three"]);
    assert!(source.last_error().is_none());
    watcher.abort();
}

/// Log lines written while `f` runs on this thread.
fn logs_of<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&buffer.0.lock().unwrap()).into_owned();
    (out, text)
}

const ALLOW_WEB: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web, namespace: shop}
spec:
  rules: [{from: [{source: {ipBlocks: [10.0.0.0/8]}}]}]
";

#[test]
fn a_broken_policy_is_enforced_fail_closed_while_the_rest_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let pods = dir.path().join("pods.yaml");
    let policy = dir.path().join("policy.yaml");
    fs::write(&pods, pod("one", "10.0.0.1")).unwrap();
    fs::write(&policy, ALLOW_WEB.replace("10.0.0.0/8", "10.0.0.0/33")).unwrap();
    const LINE: &str = "AuthorizationPolicy could not be understood";

    // A broken policy does not keep ztunnel from starting: it starts fail-closed.
    let (source, logs) = logs_of(|| LocalSource::load(config(&[dir.path()])).unwrap());
    assert_eq!(logs.matches(LINE).count(), 1, "{logs}");
    assert!(logs.contains("ipBlocks[0]"), "{logs}");
    let snapshot = source.current();
    let broken: Vec<_> = snapshot.invalid_policies().collect();
    assert_eq!(broken.len(), 1);
    let web = snapshot.workload("shop", "one").unwrap();
    let conn = ConnectionAttrs {
        src_ip: "10.0.0.5".parse().unwrap(),
        src_identity: None,
        dst_port: 80,
    };
    assert!(matches!(
        authorize(snapshot.policies_for(web), &conn),
        Decision::DeniedBy(by) if by.invalid.is_some()
    ));
    let problems = source.problems().unwrap().to_string();
    assert!(
        problems.contains("policy.yaml, document 1") && problems.contains("allows nothing"),
        "{problems}"
    );
    assert!(source.last_error().is_none(), "the manifests are in force");

    // An unrelated edit reloads (after the usual second look) and does not log it again.
    fs::write(&pods, pod("two", "10.0.0.2")).unwrap();
    let (outcomes, logs) = logs_of(|| [source.poll(), source.poll(), source.poll()]);
    assert_eq!(
        outcomes,
        [
            PollOutcome::Pending,
            PollOutcome::Published(2),
            PollOutcome::Unchanged
        ]
    );
    assert_eq!(names(&source.current()), vec!["two"]);
    assert_eq!(logs.matches(LINE).count(), 0, "logged once: {logs}");

    // Fixed: the intended policy, the problem cleared; broken again: logged again.
    fs::write(&policy, ALLOW_WEB).unwrap();
    assert_eq!(source.poll(), PollOutcome::Published(3));
    assert!(source.problems().is_none());
    assert_eq!(source.current().invalid_policies().count(), 0);
    fs::write(&policy, ALLOW_WEB.replace("ipBlocks", "ipBlock")).unwrap();
    let (outcomes, logs) = logs_of(|| [source.poll(), source.poll()]);
    assert_eq!(outcomes, [PollOutcome::Pending, PollOutcome::Published(4)]);
    assert_eq!(logs.matches(LINE).count(), 1, "{logs}");
}

#[tokio::test]
async fn the_source_reports_broken_policies_for_the_admin_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("pods.yaml"), pod("one", "10.0.0.1")).unwrap();
    fs::write(
        dir.path().join("policy.yaml"),
        ALLOW_WEB.replace("spec:\n", "spec:\n  action: allow\n"),
    )
    .unwrap();
    let source = crate::Source::start(crate::SourceConfig::Manifests(config(&[dir.path()])))
        .await
        .unwrap();
    let error = source.last_error().unwrap();
    assert!(
        error.contains("field spec.action") && error.contains("denies every connection"),
        "{error}"
    );
}
