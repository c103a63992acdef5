//! The fault matrix (issue 8; DESIGN §4 "faults are tests too", §7 "fail closed"). Each scenario
//! runs with a capture on the node link (the fabric bridge) and sends a unique marker on every
//! connection it tries, then holds the mesh to the same four promises:
//!
//! - nothing in clear: no marker on the wire, no payload between meshed pods outside HBONE;
//! - every connection is either served in mTLS or refused — never served in clear;
//! - readiness (`/healthz/ready` on 15021) says 503 while a pod lacks a valid certificate;
//! - once the fault clears, with nothing else changing, pods are served again within seconds.
//!
//! Faults: ztunnel SIGKILLed with no successor for 30 s; the CA down across a ztunnel restart;
//! certificates of 60 s with the CA down for 3 minutes (the long one, ~4 min); the API server
//! down for 2 minutes (Kubernetes mode, ~2.5 min); a broken ALLOW policy; a lost CNI DEL.
//!
//! A scenario collects every broken promise and fails once at the end listing them all, so one
//! run shows everything a fault breaks (plaintext included: that is a finding like the others).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ambit_tests::faults::{
    exchange, fds_on_netns, listeners_in_held_netns, netns_inode, open_fds, plaintext_between,
    poll_until, readiness, Exchange,
};
use ambit_tests::kube_mesh::{enrolled_names, workloads, KubeMesh};
use ambit_tests::mesh::wait_for_node_dump;
use ambit_tests::scenario::{connect_from, echo_once, testapp as app, Shop};
use ambit_tests::{Capture, Cluster, Mesh, MeshOptions, Pod, PodSpec};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// How long a pod may take to be served again once the fault has cleared.
const RECOVERY: Duration = Duration::from_secs(15);
const RETRY: Duration = Duration::from_millis(250);
const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const CART: &str = "spiffe://cluster.local/ns/shop/sa/cart";

/// Broken promises, by kind: how often each was seen and the first occurrence in full.
#[derive(Default)]
struct Findings {
    problems: BTreeMap<String, (usize, String)>,
}

impl Findings {
    /// Records `detail` under `kind` unless `ok`; returns `ok`.
    fn check(&mut self, ok: bool, kind: &str, detail: impl FnOnce() -> String) -> bool {
        if !ok {
            let detail = detail();
            eprintln!("FINDING [{kind}]: {detail}");
            let entry = self.problems.entry(kind.to_string()).or_insert((0, detail));
            entry.0 += 1;
        }
        ok
    }

    fn finish(self, scenario: &str) {
        let report: Vec<String> = self
            .problems
            .iter()
            .map(|(kind, (times, first))| format!("- {kind} ({times}×); first: {first}"))
            .collect();
        assert!(
            report.is_empty(),
            "{scenario}: {} promise(s) broken:\n{}",
            report.len(),
            report.join("\n")
        );
    }
}

/// The capture on the node link and the markers sent while it ran.
struct Wire {
    capture: Capture,
    tag: &'static str,
    meshed: Vec<Ipv4Addr>,
    markers: Vec<String>,
}

impl Wire {
    /// Starts capturing every TCP segment on the fabric bridge; `meshed` are the pod IPs whose
    /// traffic between each other must be HBONE only.
    fn start(cluster: &Cluster, tag: &'static str, meshed: &[Ipv4Addr]) -> Wire {
        Wire {
            capture: cluster.capture("tcp").unwrap(),
            tag,
            meshed: meshed.to_vec(),
            markers: Vec::new(),
        }
    }

    /// One exchange from `from` to `to` with a fresh marker the capture must never contain.
    fn exchange(&mut self, from: &Pod, to: SocketAddr) -> Exchange {
        let marker = format!(
            "{}-{}-TO-{}-{:03}-MARKER",
            self.tag,
            from.name(),
            to.ip(),
            self.markers.len()
        );
        self.markers.push(marker.clone());
        exchange(from, to, &marker)
    }

    /// Retries an exchange until it is served or `timeout` passes; returns how long it took.
    fn served_within(&mut self, from: &Pod, to: SocketAddr, timeout: Duration) -> Option<Duration> {
        let mut last = None;
        let outcome = poll_until(timeout, RETRY, || {
            let outcome = self.exchange(from, to);
            let served = outcome.served();
            last = Some(outcome);
            served.then_some(())
        });
        if outcome.is_none() {
            eprintln!(
                "{} → {to}: not served within {timeout:?}; last: {last:?}",
                from.name()
            );
        }
        outcome.map(|(_, took)| took)
    }

    /// Stops the capture and checks it: no marker, no plaintext between meshed pods, and the
    /// tunnel port seen at all (the capture did see the traffic it judges).
    fn finish(self, findings: &mut Findings) {
        let packets = self.capture.stop().unwrap();
        for marker in &self.markers {
            findings.check(
                !packets.contains(marker.as_bytes()),
                "plaintext: a marker crossed the node link in clear",
                || marker.clone(),
            );
        }
        let clear = plaintext_between(&packets, &self.meshed);
        findings.check(
            clear.is_empty(),
            "plaintext: payload between meshed pods outside HBONE",
            || {
                format!(
                    "{} segments, first {:?}",
                    clear.len(),
                    &clear[..clear.len().min(5)]
                )
            },
        );
        findings.check(
            packets.has_tcp_port(15008),
            "capture saw no HBONE at all",
            || format!("{} frames captured", packets.len()),
        );
    }
}

fn ready(cluster: &Cluster, node: usize) -> String {
    match readiness(cluster, node) {
        Ok(answer) => format!("{} {:?}", answer.status, answer.body),
        Err(error) => format!("no answer: {error}"),
    }
}

/// Whether node `node`'s ztunnel answers its readiness probe with 503.
fn unready(cluster: &Cluster, node: usize) -> bool {
    readiness(cluster, node).is_ok_and(|answer| answer.status == 503)
}

/// What a node's `/config_dump` says about enrolled pods and certificates (for findings).
fn pods_and_certificates(cluster: &Cluster, node: usize) -> String {
    match ambit_tests::mesh::node_config_dump(cluster, node) {
        Ok(dump) => format!(
            "enrolledPods={} certificates={}",
            dump["enrolledPods"], dump["certificates"]
        ),
        Err(error) => format!("no config_dump: {error}"),
    }
}

/// The last lines of a process log containing `needle` (evidence for findings).
fn log_lines(log: &str, needle: &str, last: usize) -> Vec<String> {
    let lines: Vec<String> = log
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect();
    lines[lines.len().saturating_sub(last)..].to_vec()
}

/// Waits for an access line of node `node`'s ztunnel written after `offset` that shows the
/// connection `from` → `to` with both SPIFFE identities (mTLS).
fn mtls_line_after(
    mesh: &mut Mesh,
    node: usize,
    offset: u64,
    source: &str,
    destination: &str,
) -> Option<String> {
    mesh.ztunnel(node)
        .wait_for_line_from(
            offset,
            "an mTLS access line",
            Duration::from_secs(10),
            |l| {
                let line = ambit_tests::AccessLine::parse(l);
                l.contains("connection complete")
                    && line.get("src.identity") == Some(source)
                    && line.get("dst.identity") == Some(destination)
                    && line.get("error").is_none()
            },
        )
        .ok()
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Shop, plus an echo server in frontend-0 so that both directions can be tried.
fn shop_both_ways(options: MeshOptions) -> (Shop, ambit_tests::Process) {
    let shop = Shop::start_with(options).unwrap();
    let echo = app().echo_server(shop.frontend.netns(), 8080).unwrap();
    (shop, echo)
}

#[test]
fn fault_1_ztunnel_sigkilled_fails_closed_for_30s_and_a_successor_serves_within_seconds() {
    let (
        Shop {
            mut mesh,
            frontend,
            cart,
            echo: _cart_echo,
        },
        _frontend_echo,
    ) = shop_both_ways(MeshOptions::default());
    let outsider = mesh
        .add_pod(PodSpec::new("legacy", "outsider-0").on_node(0))
        .unwrap();
    let (to_cart, to_frontend) = (cart.addr(8080), frontend.addr(8080));
    let mut findings = Findings::default();
    let mut wire = Wire::start(&mesh.cluster, "KILL", &[frontend.ip(), cart.ip()]);
    assert!(
        wire.exchange(&frontend, to_cart).served(),
        "before the fault"
    );
    assert!(
        wire.exchange(&cart, to_frontend).served(),
        "before the fault"
    );

    // SIGKILL: no drain, no cleanup. Cart's redirect rules stay in its namespace.
    mesh.ztunnel(1).signal(Signal::SIGKILL).unwrap();
    assert!(mesh
        .ztunnel(1)
        .wait_exit(Duration::from_secs(5))
        .unwrap()
        .is_some());
    let killed = Instant::now();
    while killed.elapsed() < Duration::from_secs(30) {
        let at = killed.elapsed();
        for (from, to) in [(&frontend, to_cart), (&cart, to_frontend)] {
            let outcome = wire.exchange(from, to);
            findings.check(
                outcome.refused(),
                "a connection from/to a pod of the killed ztunnel was not refused",
                || format!("{at:?} after SIGKILL, {} → {to}: {outcome:?}", from.name()),
            );
        }
        // A client outside the mesh speaks plaintext by itself (its marker is not judged on
        // the wire): what matters is that cart's inbound redirect still refuses it.
        let outcome = exchange(&outsider, to_cart, "KILL-OUTSIDER-MARKER");
        findings.check(
            outcome.refused(),
            "a plaintext client reached cart while its ztunnel was dead",
            || format!("{at:?} after SIGKILL: {outcome:?}"),
        );
        std::thread::sleep(Duration::from_secs(3));
    }

    // A successor re-syncs cart from the cluster view; nothing else changes.
    let restart = Instant::now();
    mesh.ztunnels[1] = mesh.spawn_ztunnel(1).unwrap();
    let started = restart.elapsed();
    let forward = wire.served_within(&frontend, to_cart, RECOVERY);
    let backward = wire.served_within(&cart, to_frontend, RECOVERY);
    eprintln!("successor ready after {started:?}; frontend→cart served after {forward:?}, cart→frontend after {backward:?}");
    findings.check(
        forward.is_some(),
        "frontend → cart not served again after the restart",
        || {
            format!(
                "within {RECOVERY:?}; node 1: {}",
                pods_and_certificates(&mesh.cluster, 1)
            )
        },
    );
    findings.check(
        backward.is_some(),
        "cart → frontend not served again after the restart",
        || {
            format!(
                "within {RECOVERY:?}; node 1: {}",
                pods_and_certificates(&mesh.cluster, 1)
            )
        },
    );
    findings.check(
        mtls_line_after(&mut mesh, 1, 0, FRONTEND, CART).is_some(),
        "no mTLS access line on the successor",
        || {
            format!(
                "{:?}",
                log_lines(&mesh.ztunnels[1].log().unwrap(), "access", 5)
            )
        },
    );
    let answer = ready(&mesh.cluster, 1);
    findings.check(answer.starts_with("200"), "successor not ready", || answer);
    wire.finish(&mut findings);
    findings.finish("ztunnel SIGKILLed");
}

#[test]
fn fault_2_ca_down_across_a_ztunnel_restart_fails_closed_unready_and_recovers_when_the_ca_returns()
{
    let (
        Shop {
            mut mesh,
            frontend,
            cart,
            echo: _cart_echo,
        },
        _frontend_echo,
    ) = shop_both_ways(MeshOptions::default());
    let (to_cart, to_frontend) = (cart.addr(8080), frontend.addr(8080));
    let mut findings = Findings::default();
    let mut wire = Wire::start(&mesh.cluster, "CADOWN", &[frontend.ip(), cart.ip()]);
    assert!(
        wire.exchange(&frontend, to_cart).served(),
        "before the fault"
    );
    assert!(
        wire.exchange(&cart, to_frontend).served(),
        "before the fault"
    );

    mesh.ca.stop().unwrap();
    // Node 1's ztunnel restarts while the CA is down: its successor cannot get cart's
    // certificate (it waits for it up to 10 s while re-syncing, then goes on).
    mesh.ztunnel(1).stop().unwrap();
    mesh.ztunnels[1] = mesh.spawn_ztunnel(1).unwrap();
    let restarted = Instant::now();
    while restarted.elapsed() < Duration::from_secs(15) {
        let at = restarted.elapsed();
        for (from, to) in [(&frontend, to_cart), (&cart, to_frontend)] {
            let outcome = wire.exchange(from, to);
            findings.check(
                outcome.refused(),
                "a connection from/to cart (no certificate) was not refused",
                || {
                    format!(
                        "{at:?} after the restart, {} → {to}: {outcome:?}",
                        from.name()
                    )
                },
            );
        }
        findings.check(
            unready(&mesh.cluster, 1),
            "readiness not 503 while cart-0 has no certificate (CA down)",
            || {
                format!(
                    "{at:?} after the restart: {}; node 1: {}",
                    ready(&mesh.cluster, 1),
                    pods_and_certificates(&mesh.cluster, 1)
                )
            },
        );
        std::thread::sleep(Duration::from_secs(2));
    }

    // The CA comes back. Nothing else changes: no manifest is touched from here on.
    mesh.ca = mesh.spawn_ca().unwrap();
    let back = Instant::now();
    let forward = wire.served_within(&frontend, to_cart, RECOVERY);
    let backward = wire.served_within(&cart, to_frontend, RECOVERY);
    let became_ready = poll_until(RECOVERY.saturating_sub(back.elapsed()), RETRY, || {
        readiness(&mesh.cluster, 1).ok().filter(|r| r.is_ready())
    });
    eprintln!(
        "CA back: frontend→cart served after {forward:?}, cart→frontend after {backward:?}, ready after {:?}",
        became_ready.as_ref().map(|(_, took)| took)
    );
    let evidence = |mesh: &Mesh| {
        format!(
            "node 1: {}; its log: {:?}",
            pods_and_certificates(&mesh.cluster, 1),
            log_lines(&mesh.ztunnels[1].log().unwrap(), "cart-0", 4)
        )
    };
    findings.check(
        forward.is_some(),
        "frontend → cart not served again after the CA returned (nothing else changed)",
        || format!("within {RECOVERY:?}; {}", evidence(&mesh)),
    );
    findings.check(
        backward.is_some(),
        "cart → frontend not served again after the CA returned (nothing else changed)",
        || format!("within {RECOVERY:?}; {}", evidence(&mesh)),
    );
    findings.check(
        became_ready.is_some(),
        "node 1 not ready after the CA returned",
        || ready(&mesh.cluster, 1),
    );
    if forward.is_some() {
        findings.check(
            mtls_line_after(&mut mesh, 1, 0, FRONTEND, CART).is_some(),
            "no mTLS access line after recovery",
            || {
                format!(
                    "{:?}",
                    log_lines(&mesh.ztunnels[1].log().unwrap(), "access", 5)
                )
            },
        );
    }
    wire.finish(&mut findings);
    findings.finish("CA down across a ztunnel restart");
}

/// `(notBefore, notAfter)` of every certificate in node `node`'s `/config_dump`.
fn certificate_windows(cluster: &Cluster, node: usize) -> Vec<(String, u64, u64)> {
    let dump = ambit_tests::mesh::node_config_dump(cluster, node).unwrap();
    dump["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some((
                c["identity"].as_str()?.to_string(),
                c["notBefore"].as_u64()?,
                c["notAfter"].as_u64()?,
            ))
        })
        .collect()
}

/// The long one (~4 minutes): certificates of 60 s and the CA down for 3 minutes.
#[test]
fn fault_3_long_cert_ttl_60s_with_the_ca_down_3_minutes_expired_certificates_refuse_and_unready() {
    let (
        Shop {
            mut mesh,
            frontend,
            cart,
            echo: _cart_echo,
        },
        _frontend_echo,
    ) = shop_both_ways(MeshOptions::default().ztunnel_args(["--cert-ttl", "60s"]));
    let (to_cart, to_frontend) = (cart.addr(8080), frontend.addr(8080));
    let mut findings = Findings::default();

    // The CA takes 60 s as asked (its --max-ttl bounds from above only): each certificate
    // lives 60 s after issuance plus the CA's back-dating of a tenth of that.
    for node in 0..2 {
        let windows = certificate_windows(&mesh.cluster, node);
        assert_eq!(windows.len(), 1, "node {node}: {windows:?}");
        let (identity, not_before, not_after) = &windows[0];
        assert!(
            (60..=66).contains(&(not_after - not_before)),
            "node {node}: {identity} lives {}s, not the 60 s asked for",
            not_after - not_before
        );
    }
    assert!(mesh.ca.log().unwrap().contains("ttl_seconds=60"));

    let mut wire = Wire::start(&mesh.cluster, "EXPIRY", &[frontend.ip(), cart.ip()]);
    assert!(
        wire.exchange(&frontend, to_cart).served(),
        "before the fault"
    );
    assert!(
        wire.exchange(&cart, to_frontend).served(),
        "before the fault"
    );

    mesh.ca.stop().unwrap();
    let down = Instant::now();
    // The certificates in hand keep serving until they expire.
    findings.check(
        wire.exchange(&frontend, to_cart).served(),
        "valid certificates stopped serving as soon as the CA went down",
        String::new,
    );
    let expiry = (0..2)
        .flat_map(|node| certificate_windows(&mesh.cluster, node))
        .map(|(_, _, not_after)| not_after)
        .max()
        .unwrap();
    while now_unix() <= expiry + 1 {
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!(
        "certificates expired {:?} after the CA went down",
        down.elapsed()
    );
    // Expired and not renewable: refused, and neither node is ready, until the CA returns.
    while down.elapsed() < Duration::from_secs(180) {
        let at = down.elapsed();
        for (from, to) in [(&frontend, to_cart), (&cart, to_frontend)] {
            let outcome = wire.exchange(from, to);
            findings.check(
                outcome.refused(),
                "a connection with expired certificates was not refused",
                || {
                    format!(
                        "{at:?} after the CA went down, {} → {to}: {outcome:?}",
                        from.name()
                    )
                },
            );
        }
        for node in 0..2 {
            findings.check(
                unready(&mesh.cluster, node),
                "readiness not 503 with expired certificates",
                || {
                    format!(
                        "node {node}, {at:?} after the CA went down: {}; {}",
                        ready(&mesh.cluster, node),
                        pods_and_certificates(&mesh.cluster, node)
                    )
                },
            );
        }
        std::thread::sleep(Duration::from_secs(10));
    }

    mesh.ca = mesh.spawn_ca().unwrap();
    let back = Instant::now();
    let forward = wire.served_within(&frontend, to_cart, RECOVERY);
    let backward = wire.served_within(&cart, to_frontend, RECOVERY);
    eprintln!("CA back: frontend→cart served after {forward:?}, cart→frontend after {backward:?}");
    let evidence = |mesh: &Mesh| {
        format!(
            "now={} node 0: {}; node 1: {}",
            now_unix(),
            pods_and_certificates(&mesh.cluster, 0),
            pods_and_certificates(&mesh.cluster, 1)
        )
    };
    findings.check(
        forward.is_some(),
        "frontend → cart not served again after the CA returned",
        || format!("within {RECOVERY:?}; {}", evidence(&mesh)),
    );
    findings.check(
        backward.is_some(),
        "cart → frontend not served again after the CA returned",
        || format!("within {RECOVERY:?}; {}", evidence(&mesh)),
    );
    for node in 0..2 {
        let left = RECOVERY.saturating_sub(back.elapsed());
        let ready_again = poll_until(left, RETRY, || {
            readiness(&mesh.cluster, node).ok().filter(|r| r.is_ready())
        });
        findings.check(
            ready_again.is_some(),
            "not ready again after the CA returned",
            || format!("node {node}: {}", ready(&mesh.cluster, node)),
        );
    }
    wire.finish(&mut findings);
    findings.finish("60 s certificates, CA down for 3 minutes");
}

/// A Pod object only (no sandbox): enough for every node agent to list it once it sees it.
fn create_pod_object(mesh: &KubeMesh, name: &str, node: &str) {
    let object = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "nodeName": node,
            "serviceAccountName": "late",
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "ambit-testapp:test"}],
        },
    });
    let out = mesh
        .api
        .kubectl_output(
            None,
            &["create", "-f", "-"],
            Some(object.to_string().as_bytes()),
        )
        .unwrap();
    assert!(out.success, "kubectl create {name}: {out:?}");
}

/// ~2.5 minutes: Kubernetes mode, the API server down for 2 minutes.
#[test]
fn fault_4_api_server_down_2_minutes_keeps_the_last_snapshot_then_a_change_is_picked_up_within_seconds(
) {
    let mut mesh = KubeMesh::start(2).unwrap();
    mesh.kubectl(&["create", "namespace", "shop"]).unwrap();
    mesh.kubectl(&[
        "label",
        "namespace",
        "shop",
        "istio.io/dataplane-mode=ambient",
    ])
    .unwrap();
    let frontend = mesh
        .add_pod(
            PodSpec::new("shop", "frontend-0")
                .on_node(0)
                .service_account("frontend"),
        )
        .unwrap();
    let cart = mesh
        .add_pod(
            PodSpec::new("shop", "cart-0")
                .on_node(1)
                .service_account("cart")
                .port(8080),
        )
        .unwrap();
    for (node, name) in [(0, "frontend-0"), (1, "cart-0")] {
        mesh.wait_for_dump(node, "the pod is enrolled", |d| enrolled_names(d) == [name])
            .unwrap();
    }
    let _cart_echo = app().echo_server(cart.netns(), 8080).unwrap();
    let _frontend_echo = app().echo_server(frontend.netns(), 8080).unwrap();
    let (to_cart, to_frontend) = (cart.addr(8080), frontend.addr(8080));
    let mut findings = Findings::default();
    let mut wire = Wire::start(&mesh.cluster, "APIDOWN", &[frontend.ip(), cart.ip()]);
    assert!(
        wire.exchange(&frontend, to_cart).served(),
        "before the fault"
    );
    assert!(
        wire.exchange(&cart, to_frontend).served(),
        "before the fault"
    );
    mesh.wait_for_access(1, |l| {
        l.get("src.identity") == Some(FRONTEND) && l.get("dst.identity") == Some(CART)
    })
    .unwrap();
    let mut established = connect_from(&frontend, to_cart).unwrap();
    assert_eq!(
        echo_once(&mut established, b"APIDOWN-LIVE-0").unwrap(),
        b"APIDOWN-LIVE-0"
    );
    wire.markers.push("APIDOWN-LIVE-0".into());

    mesh.api.stop_apiserver();
    let down = Instant::now();
    let mut round = 0;
    while down.elapsed() < Duration::from_secs(120) {
        let at = down.elapsed();
        round += 1;
        let live = format!("APIDOWN-LIVE-{round}");
        wire.markers.push(live.clone());
        let echoed = echo_once(&mut established, live.as_bytes());
        findings.check(
            echoed.as_deref().ok() == Some(live.as_bytes()),
            "an established connection broke while the API server was down",
            || format!("{at:?} after it went down: {echoed:?}"),
        );
        for (from, to) in [(&frontend, to_cart), (&cart, to_frontend)] {
            let outcome = wire.exchange(from, to);
            findings.check(
                outcome.served(),
                "a new connection between known pods failed while the API server was down",
                || {
                    format!(
                        "{at:?} after it went down, {} → {to}: {outcome:?}",
                        from.name()
                    )
                },
            );
        }
        for node in 0..2 {
            let answer = ready(&mesh.cluster, node);
            findings.check(
                answer.starts_with("200"),
                "a node went unready while the API server was down",
                || format!("node {node}, {at:?} after it went down: {answer}"),
            );
        }
        std::thread::sleep(Duration::from_secs(10));
    }
    // The fault was real: the node agents saw their watches fail.
    for node in 0..2 {
        let log = mesh.ztunnels[node].log().unwrap();
        assert!(
            log.contains("watch failed"),
            "node {node} never noticed the API server was down"
        );
    }
    let inbound_after = mesh.ztunnels[1].log_len().unwrap();
    findings.check(
        echo_once(&mut established, b"APIDOWN-LIVE-END").is_ok(),
        "the established connection did not survive the outage",
        String::new,
    );
    wire.markers.push("APIDOWN-LIVE-END".into());

    mesh.api.start_apiserver().unwrap();
    let back = Instant::now();
    // A change made after it returns reaches both node agents within seconds.
    create_pod_object(&mesh, "late-0", mesh.cluster.node(1).name());
    for node in 0..2 {
        let seen = wait_for_node_dump(&mesh.cluster, node, "late-0 is listed", RECOVERY, |d| {
            workloads(d).any(|w| w["name"] == "late-0")
        });
        findings.check(
            seen.is_ok(),
            "a Pod created after the API server returned was not picked up",
            || format!("node {node}: {:?}", seen.as_ref().err()),
        );
    }
    eprintln!(
        "API server back: late-0 seen by both nodes after {:?}",
        back.elapsed()
    );
    // And a real new pod joins the mesh and is served in mTLS.
    let cart1 = mesh.add_pod(
        PodSpec::new("shop", "cart-1")
            .on_node(1)
            .service_account("cart")
            .port(8080),
    );
    findings.check(
        cart1.is_ok(),
        "a pod added after the API server returned could not join",
        || format!("{:?}", cart1.as_ref().err()),
    );
    if let Ok(cart1) = &cart1 {
        let _echo = app().echo_server(cart1.netns(), 8080).unwrap();
        let served = wire.served_within(&frontend, cart1.addr(8080), RECOVERY);
        findings.check(served.is_some(), "the new pod was not served", String::new);
        let cart1_ip = cart1.ip().to_string();
        let line = mesh.ztunnels[1].wait_for_line_from(
            inbound_after,
            "mTLS line for cart-1",
            Duration::from_secs(10),
            |l| {
                let line = ambit_tests::AccessLine::parse(l);
                l.contains("connection complete")
                    && line.get("src.identity") == Some(FRONTEND)
                    && line.get("dst.identity") == Some(CART)
                    && line
                        .get("dst.hbone_addr")
                        .is_some_and(|a| a.starts_with(&cart1_ip))
            },
        );
        findings.check(line.is_ok(), "no mTLS access line for the new pod", || {
            format!("{:?}", line.err())
        });
        wire.meshed.push(cart1.ip());
    }
    wire.finish(&mut findings);
    findings.finish("API server down for 2 minutes");
}

fn cart_allow(spec_from: Value) -> Value {
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "cart-allow", "namespace": "shop"},
        "spec": {
            "selector": {"matchLabels": {"app": "cart"}},
            "action": "ALLOW",
            "rules": [{"from": [{"source": spec_from}]}]
        }
    })
}

#[test]
fn fault_5_a_broken_allow_policy_allows_nothing_and_fixing_it_restores_access_within_seconds() {
    let Shop {
        mut mesh,
        frontend,
        cart,
        echo: _echo,
    } = Shop::start().unwrap();
    let to_cart = cart.addr(8080);
    let mut findings = Findings::default();
    let mut wire = Wire::start(&mesh.cluster, "BADPOLICY", &[frontend.ip(), cart.ip()]);
    assert!(
        wire.exchange(&frontend, to_cart).served(),
        "before the fault"
    );

    // The only ALLOW for cart, with a prefix length no IPv4 block has.
    let file = "policy-cart-allow.yaml";
    mesh.cluster
        .put_manifest(file, vec![cart_allow(json!({"ipBlocks": ["10.0.0.0/33"]}))])
        .unwrap();
    let dump = mesh
        .wait_for_dump(1, "the broken policy is reported", |d| {
            d["invalidPolicies"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["name"] == "cart-allow"))
        })
        .unwrap();
    let reported = dump["invalidPolicies"][0].to_string();
    assert!(reported.contains("ipBlocks"), "{reported}");
    let offset = mesh.ztunnel(1).log_len().unwrap();
    for _ in 0..3 {
        let outcome = wire.exchange(&frontend, to_cart);
        findings.check(
            outcome.refused(),
            "cart served a connection under a broken ALLOW",
            || format!("{outcome:?}"),
        );
    }
    let denial = mesh.ztunnel(1).wait_for_line_from(
        offset,
        "the denial names the broken policy",
        Duration::from_secs(10),
        |l| l.contains("connection complete") && l.contains("error="),
    );
    findings.check(
        denial
            .as_ref()
            .is_ok_and(|l| l.contains("shop/cart-allow") && l.contains("could not be understood")),
        "the access log does not say the policy could not be understood",
        || format!("{denial:?}"),
    );

    // Fixed: frontend by principal.
    mesh.cluster
        .put_manifest(
            file,
            vec![cart_allow(
                json!({"principals": ["cluster.local/ns/shop/sa/frontend"]}),
            )],
        )
        .unwrap();
    let fixed = Instant::now();
    let served = wire.served_within(&frontend, to_cart, RECOVERY);
    eprintln!("policy fixed: served after {served:?}");
    findings.check(
        served.is_some(),
        "access not restored after fixing the policy",
        || {
            format!(
                "{:?}",
                mesh.config_dump(1).map(|d| d["invalidPolicies"].clone())
            )
        },
    );
    let cleared = poll_until(RECOVERY.saturating_sub(fixed.elapsed()), RETRY, || {
        mesh.config_dump(1)
            .ok()
            .filter(|d| d["invalidPolicies"].as_array().is_some_and(Vec::is_empty))
    });
    findings.check(
        cleared.is_some(),
        "invalidPolicies still lists the fixed policy",
        String::new,
    );
    findings.check(
        mtls_line_after(&mut mesh, 1, offset, FRONTEND, CART).is_some(),
        "no mTLS access line after the fix",
        String::new,
    );
    wire.finish(&mut findings);
    findings.finish("broken ALLOW policy");
}

#[test]
fn fault_6_a_lost_cni_del_is_unenrolled_eventually_without_leaking_listeners_or_fds() {
    let Shop {
        mut mesh,
        frontend,
        cart,
        echo: _echo,
    } = Shop::start().unwrap();
    let mut findings = Findings::default();
    let mut wire = Wire::start(&mesh.cluster, "LOSTDEL", &[frontend.ip(), cart.ip()]);
    assert!(
        wire.exchange(&frontend, cart.addr(8080)).served(),
        "warm-up"
    );
    let ztunnel = mesh.ztunnels[1].pid();
    let baseline = open_fds(ztunnel).unwrap();

    let orphan = mesh
        .add_pod(
            PodSpec::new("shop", "orphan-0")
                .on_node(1)
                .service_account("orphan")
                .port(8080),
        )
        .unwrap();
    wire.meshed.push(orphan.ip());
    let orphan_echo = app().echo_server(orphan.netns(), 8080).unwrap();
    mesh.wait_for_dump(1, "orphan-0 is enrolled", |d| {
        enrolled_names(d).contains(&"orphan-0".to_string())
    })
    .unwrap();
    assert!(wire.exchange(&frontend, orphan.addr(8080)).served());
    let inode = netns_inode(orphan.netns()).unwrap();
    let held = fds_on_netns(ztunnel, inode).unwrap();
    assert!(
        held > 0,
        "ztunnel holds the pod's namespace while it serves it"
    );

    // The pod goes away, but its CNI DEL never reaches ztunnel.
    mesh.cluster.remove_pod_without_cni_del(&orphan).unwrap();
    drop(orphan_echo);
    mesh.wait_for_dump(1, "orphan-0 left the cluster view", |d| {
        workloads(d).all(|w| w["name"] != "orphan-0")
    })
    .unwrap();
    let released = poll_until(Duration::from_secs(30), Duration::from_millis(500), || {
        let dump = mesh.config_dump(1).ok()?;
        let enrolled = !enrolled_names(&dump).contains(&"orphan-0".to_string());
        let certificate = dump["certificates"].as_array().is_some_and(|c| {
            c.iter()
                .all(|c| !c["identity"].as_str().unwrap_or("").ends_with("/sa/orphan"))
        });
        let namespace = fds_on_netns(ztunnel, inode).ok()? == 0;
        let fds = open_fds(ztunnel).ok()? <= baseline + 4;
        (enrolled && certificate && namespace && fds).then_some(())
    });
    findings.check(released.is_some(), "the pod of a lost CNI DEL is never unenrolled", || {
        format!(
            "30 s after it left the cluster view: {}; fds on its deleted namespace: {:?}; open fds {:?} (baseline {baseline}); still listening there: {:?}",
            pods_and_certificates(&mesh.cluster, 1),
            fds_on_netns(ztunnel, inode),
            open_fds(ztunnel),
            listeners_in_held_netns(ztunnel, inode)
        )
    });
    // The rest of the node is unaffected.
    findings.check(
        wire.exchange(&frontend, cart.addr(8080)).served(),
        "cart not served after the lost DEL",
        String::new,
    );
    wire.finish(&mut findings);
    findings.finish("lost CNI DEL");
}
