//! Tests of the cluster-in-a-box itself: real namespaces, real CNI plugins, real packets.
//! They need root (CI runs as root) and fail with a message saying so otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ambit_tests::{Cluster, HarnessError, PodSpec, ProcessSpec, Result, TestApp};

fn testapp() -> TestApp {
    TestApp::at(env!("CARGO_BIN_EXE_ambit-testapp"))
}

/// Names of root-namespace links and named namespaces that carry `prefix`.
fn leftovers(prefix: &str) -> Vec<String> {
    let mut found: Vec<String> = ambit_tests::netns::list()
        .unwrap()
        .into_iter()
        .filter(|name| name.starts_with(prefix))
        .collect();
    let links = ambit_tests::cmd::ip(&["-o", "link", "show"]).unwrap();
    found.extend(
        links
            .lines()
            .filter(|line| line.contains(prefix))
            .map(str::to_string),
    );
    found
}

#[test]
fn pod_reaches_pod_on_other_node_with_payload_intact() -> Result<()> {
    let started = Instant::now();
    let mut cluster = Cluster::builder().nodes(2).build()?;
    let a0 = cluster.add_pod(PodSpec::new("shop", "client-0").on_node(0))?;
    let a1 = cluster.add_pod(PodSpec::new("shop", "client-1").on_node(0))?;
    let b0 = cluster.add_pod(
        PodSpec::new("shop", "web-0")
            .on_node(1)
            .label("app", "web")
            .port(8080),
    )?;
    let _b1 = cluster.add_pod(
        PodSpec::new("shop", "web-1")
            .on_node(1)
            .label("app", "web")
            .port(8080),
    )?;
    eprintln!(
        "2x2 cluster {} up in {:?}",
        cluster.prefix(),
        started.elapsed()
    );

    // Pod CIDRs follow the plan: node i hands out 10.X.(i+1).0/24.
    let x = cluster.octet();
    assert_eq!(a0.ip().octets()[..3], [10, x, 1]);
    assert_eq!(b0.ip().octets()[..3], [10, x, 2]);

    let app = testapp();
    let mut server = app.echo_server(b0.netns(), 8080)?;
    let report = app.echo_client(a0.netns(), b0.addr(8080), 8 << 20, None)?;
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.received, 8 << 20);
    // No NAT anywhere: the server sees the client pod's own address.
    server.wait_for_log(
        &format!("accepted from {}:", a0.ip()),
        Duration::from_secs(5),
    )?;

    // Same node, over the node's bridge.
    let same_node = app.echo_client(b0.netns(), b0.addr(8080), 4096, None);
    assert!(same_node?.intact());
    let report = app.echo_client(a1.netns(), b0.addr(8080), 65536, None)?;
    assert!(report.intact());

    // The manifests describe what exists.
    let pod_file = cluster.manifests_dir().join("20-pod.shop.web-0.yaml");
    let yaml = std::fs::read_to_string(&pod_file).unwrap();
    assert!(yaml.contains(&format!("podIP: {}", b0.ip())), "{yaml}");
    assert!(yaml.contains("nodeName: node-1"), "{yaml}");
    Ok(())
}

#[test]
fn nothing_routes_outside_the_cluster() -> Result<()> {
    let mut cluster = Cluster::builder().nodes(1).build()?;
    let pod = cluster.add_pod(PodSpec::new("default", "p"))?;
    let node = cluster.node(0);
    // Nodes and the fabric have no default route and no link to the root namespace.
    assert_eq!(node.netns().ip(&["route", "show", "default"])?.trim(), "");
    assert_eq!(
        cluster.fabric().ip(&["route", "show", "default"])?.trim(),
        ""
    );
    for netns in [node.netns(), cluster.fabric(), pod.netns()] {
        let routed = netns.exec_output(
            "ip",
            ["route", "get", "192.0.2.1"],
            None,
            Duration::from_secs(5),
        )?;
        let reaches_uplink = routed.success && !routed.stdout.contains(" via 10.");
        assert!(
            !reaches_uplink,
            "{} routes to the uplink: {}",
            netns.name(),
            routed.stdout
        );
    }
    // From the pod, a non-cluster address is unreachable (dies at the node).
    let out = pod.exec_output(
        testapp().path(),
        ["client", "--connect", "192.0.2.1:80", "--timeout-ms", "500"],
        Duration::from_secs(10),
    )?;
    assert!(!out.success, "pod reached 192.0.2.1: {}", out.stdout);
    Ok(())
}

#[test]
fn teardown_removes_every_namespace_link_and_process() -> Result<()> {
    let mut cluster = Cluster::builder().nodes(2).build()?;
    let prefix = cluster.prefix().to_string();
    let pod = cluster.add_pod(PodSpec::new("default", "p").on_node(1))?;
    // An untracked process in the pod, as a crashed test might leave behind.
    let mut stray = pod
        .netns()
        .command("sleep")
        .arg("600")
        .spawn()
        .map_err(|e| HarnessError::Invalid(e.to_string()))?;
    let lease = format!("/run/ambit-tests/net-{}.lock", cluster.octet());
    assert!(std::path::Path::new(&lease).exists());
    assert!(!leftovers(&prefix).is_empty());
    cluster.teardown()?;
    assert_eq!(leftovers(&prefix), Vec::<String>::new());
    assert!(
        !std::path::Path::new(&lease).exists(),
        "lease {lease} not released"
    );
    let status = stray
        .wait()
        .map_err(|e| HarnessError::Invalid(e.to_string()))?;
    assert!(!status.success(), "stray process was not killed");
    Ok(())
}

#[test]
fn teardown_happens_when_a_test_panics() {
    ambit_tests::require_root().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut cluster = Cluster::builder().nodes(2).build().unwrap();
        tx.send((
            cluster.prefix().to_string(),
            cluster.root_dir().to_path_buf(),
        ))
        .unwrap();
        let pod = cluster.add_pod(PodSpec::new("default", "p")).unwrap();
        let _server = testapp().echo_server(pod.netns(), 8080).unwrap();
        let _agent = cluster
            .node(1)
            .spawn(ProcessSpec::new("sleep").arg("600"))
            .unwrap();
        panic!("deliberate panic inside a cluster test");
    }));
    assert!(outcome.is_err());
    let (prefix, root) = rx.recv().unwrap();
    assert_eq!(leftovers(&prefix), Vec::<String>::new());
    // Artifacts of a failed test are kept for debugging; clean them up here.
    assert!(
        root.join("logs").exists(),
        "logs of the failed cluster were not kept"
    );
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn capture_on_the_fabric_sees_plaintext_between_nodes() -> Result<()> {
    let mut cluster = Cluster::builder().nodes(2).build()?;
    let client = cluster.add_pod(PodSpec::new("default", "client").on_node(0))?;
    let server = cluster.add_pod(PodSpec::new("default", "server").on_node(1))?;
    let app = testapp();
    let _echo = app.echo_server(server.netns(), 9000)?;
    let marker = format!("AMBIT-PLAINTEXT-{:08x}", rand::random::<u32>());
    let capture = cluster.capture("tcp port 9000")?;
    let report = app.echo_client(client.netns(), server.addr(9000), 200, Some(&marker))?;
    assert!(report.intact());
    let packets = capture.stop()?;
    assert!(
        packets.contains(marker.as_bytes()),
        "{} frames, marker absent",
        packets.len()
    );
    assert!(!packets.contains(b"AMBIT-NEVER-SENT"));
    Ok(())
}

#[test]
fn concurrent_clusters_do_not_collide() -> Result<()> {
    ambit_tests::require_root()?;
    let runs: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(|| -> Result<(u8, String)> {
                let mut cluster = Cluster::builder().nodes(2).build()?;
                let a = cluster.add_pod(PodSpec::new("default", "a").on_node(0))?;
                let b = cluster.add_pod(PodSpec::new("default", "b").on_node(1))?;
                let app = testapp();
                let _echo = app.echo_server(b.netns(), 7000)?;
                let report = app.echo_client(a.netns(), b.addr(7000), 1 << 20, None)?;
                assert!(report.intact());
                // Hold every cluster up at once before tearing down.
                std::thread::sleep(Duration::from_millis(300));
                Ok((cluster.octet(), cluster.prefix().to_string()))
            })
        })
        .collect();
    let mut octets = HashSet::new();
    let mut prefixes = HashSet::new();
    for run in runs {
        let (octet, prefix) = run.join().expect("cluster thread panicked")?;
        octets.insert(octet);
        prefixes.insert(prefix);
    }
    assert_eq!(octets.len(), 3, "address plans collided: {octets:?}");
    assert_eq!(prefixes.len(), 3);
    Ok(())
}

#[test]
fn binaries_run_in_node_and_control_plane_namespaces() -> Result<()> {
    let mut cluster = Cluster::builder().nodes(2).build()?;
    let pod = cluster.add_pod(PodSpec::new("default", "p").on_node(0))?;
    let app = testapp();
    // A host-network agent on node 1 (as ztunnel runs), reached from a pod on node 0.
    let node = cluster.node(1);
    let mut agent = node.spawn(
        ProcessSpec::new(app.path())
            .name("agent")
            .args(["echo", "--listen", "0.0.0.0:15008"])
            .env("NODE_NAME", node.name()),
    )?;
    agent.wait_for_log("listening on", Duration::from_secs(5))?;
    let to_node = SocketAddr::from((node.ip(), 15008));
    assert!(app.echo_client(pod.netns(), to_node, 1000, None)?.intact());
    // A control-plane process (as ambit-ca runs) in the fabric, reached from a pod.
    let _ca = app.echo_server(cluster.fabric(), 15012)?;
    let to_ca = SocketAddr::from((cluster.control_plane_ip(), 15012));
    assert!(app.echo_client(pod.netns(), to_ca, 1000, None)?.intact());
    // Logs are readable; waiting can start from a mark to see only what comes next.
    assert!(agent.log()?.contains("accepted from"));
    let mark = agent.log_len()?;
    assert!(app.echo_client(pod.netns(), to_node, 10, None)?.intact());
    let next =
        agent.wait_for_line_from(mark, "second connection", Duration::from_secs(5), |l| {
            l.starts_with("accepted from")
        })?;
    assert!(next.contains(&pod.ip().to_string()), "{next}");
    let none = agent.wait_for_line_from(mark, "nothing", Duration::from_millis(50), |l| {
        l.contains("never")
    });
    assert!(matches!(none, Err(HarnessError::WaitTimeout { .. })));
    agent.stop()?;
    assert!(agent.try_exit_status()?.is_some());
    Ok(())
}

#[test]
fn sweep_removes_what_a_crashed_run_left() -> Result<()> {
    ambit_tests::require_root()?;
    let crashed = format!("ab{:05x}", rand::random::<u32>() & 0xf_ffff);
    let orphan = format!("ab{:05x}", rand::random::<u32>() & 0xf_ffff);
    // A lease whose owner is gone: our pid, but a start time that is not ours.
    let lease = format!("/run/ambit-tests/net-crashed-{crashed}.lock");
    std::fs::write(
        &lease,
        format!("pid={} start=0 prefix={crashed}\n", std::process::id()),
    )
    .map_err(|e| HarnessError::Invalid(e.to_string()))?;
    let run = |args: &[&str]| ambit_tests::cmd::ip(args);
    run(&["netns", "add", &format!("{crashed}-n0")])?;
    run(&["netns", "add", &format!("{orphan}-fab")])?; // no lease at all
    let mut stray = std::process::Command::new("ip")
        .args(["netns", "exec", &format!("{crashed}-n0"), "sleep", "600"])
        .spawn()
        .map_err(|e| HarnessError::Invalid(e.to_string()))?;
    // Sweep only once the stray process is really inside (it has exec'd `sleep`): a process
    // still on its way into a namespace cannot be seen there, and a crashed run has none of those.
    let comm = format!("/proc/{}/comm", stray.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&comm).map_or(true, |c| c.trim() != "sleep") {
        assert!(
            std::time::Instant::now() < deadline,
            "the stray process never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // Another test process may sweep first, so check the outcome, not who did it.
    let report = ambit_tests::sweep_stale()?;
    let remaining = [leftovers(&crashed), leftovers(&orphan)].concat();
    assert!(remaining.is_empty(), "{remaining:?} left after {report:?}");
    assert!(!std::path::Path::new(&lease).exists());
    let status = stray
        .wait()
        .map_err(|e| HarnessError::Invalid(e.to_string()))?;
    assert!(!status.success(), "process in a swept namespace survived");
    Ok(())
}
