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

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ambit_tests::faults::{
    check_ready_within, describe_pods_and_certificates, describe_readiness, exchange, fds_on_netns,
    listeners_in_held_netns, log_lines_containing, netns_inode, open_fds, poll_until, unready,
    Exchange, Findings, Wire,
};
use ambit_tests::kube_mesh::KubeMesh;
use ambit_tests::node_admin::{as_json, node_config_dump, wait_for_node_dump};
use ambit_tests::scenario::{connect_from, echo_once, testapp as app, Shop};
use ambit_tests::{AccessLine, Cluster, Mesh, MeshOptions, MeshUnderTest, Pod, PodSpec, Process};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// How long a pod may take to be served again once the fault has cleared.
const RECOVERY: Duration = Duration::from_secs(15);
const RETRY: Duration = Duration::from_millis(250);
const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const CART: &str = "spiffe://cluster.local/ns/shop/sa/cart";

/// Waits for an access line of node `node`'s ztunnel, written after `offset`, of a connection
/// from `source` to `destination` that completed with both SPIFFE identities (mTLS).
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
                let line = AccessLine::parse(l);
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
fn shop_both_ways(options: MeshOptions) -> (Shop, Process) {
    let shop = Shop::start_with(options).unwrap();
    let echo = app().echo_server(shop.frontend.netns(), 8080).unwrap();
    (shop, echo)
}

/// frontend → cart and cart → frontend: the two directions most scenarios try.
fn both_ways<'p>(frontend: &'p Pod, cart: &'p Pod) -> [(&'p Pod, SocketAddr); 2] {
    [(frontend, cart.addr(8080)), (cart, frontend.addr(8080))]
}

#[test]
fn fault_1_ztunnel_sigkilled_fails_closed_for_30s_and_a_successor_serves_within_seconds() {
    let (shop, _frontend_echo) = shop_both_ways(MeshOptions::default());
    let Shop {
        mut mesh,
        frontend,
        cart,
        echo: _cart_echo,
    } = shop;
    let outsider = mesh
        .add_pod(PodSpec::new("legacy", "outsider-0").on_node(0))
        .unwrap();
    let ways = both_ways(&frontend, &cart);
    let mut findings = Findings::default();
    let mut wire = Wire::start(&mesh.cluster, "KILL", &[frontend.ip(), cart.ip()]).unwrap();
    wire.assert_served(&ways);

    // SIGKILL: no drain, no cleanup. Cart's redirect rules stay in its namespace.
    mesh.ztunnel(1).signal(Signal::SIGKILL).unwrap();
    assert!(mesh
        .ztunnel(1)
        .wait_exit(Duration::from_secs(5))
        .unwrap()
        .is_some());
    let killed = Instant::now();
    while killed.elapsed() < Duration::from_secs(30) {
        let when = format!("{:?} after SIGKILL", killed.elapsed());
        let kind = "a connection from/to a pod of the killed ztunnel was not refused";
        wire.try_ways(&mut findings, &ways, Exchange::refused, kind, &when);
        // A client outside the mesh speaks plaintext by itself (its marker is not judged on
        // the wire): what matters is that cart's inbound redirect still refuses it.
        let outcome = exchange(&outsider, cart.addr(8080), "KILL-OUTSIDER-MARKER");
        findings.check(
            outcome.refused(),
            "a plaintext client reached cart while its ztunnel was dead",
            || format!("{when}: {outcome:?}"),
        );
        std::thread::sleep(Duration::from_secs(3));
    }

    // A successor re-syncs cart from the cluster view; nothing else changes.
    mesh.replace_ztunnel(1).unwrap();
    wire.recover_ways(
        &mut findings,
        &ways,
        RECOVERY,
        "not served again after the restart",
        || describe_pods_and_certificates(&mesh.cluster, 1),
    );
    findings.check(
        mtls_line_after(&mut mesh, 1, 0, FRONTEND, CART).is_some(),
        "no mTLS access line on the successor",
        || {
            format!(
                "{:?}",
                log_lines_containing(&mesh.ztunnels[1].log().unwrap(), "access", 5)
            )
        },
    );
    check_ready_within(
        &mut findings,
        &mesh.cluster,
        1,
        RECOVERY,
        "the successor is not ready",
    );
    wire.finish(&mut findings).unwrap();
    findings.finish("ztunnel SIGKILLed");
}

#[test]
fn fault_2_ca_down_across_a_ztunnel_restart_fails_closed_unready_and_recovers_when_the_ca_returns()
{
    let (shop, _frontend_echo) = shop_both_ways(MeshOptions::default());
    let Shop {
        mut mesh,
        frontend,
        cart,
        echo: _cart_echo,
    } = shop;
    let ways = both_ways(&frontend, &cart);
    let mut findings = Findings::default();
    let mut wire = Wire::start(&mesh.cluster, "CADOWN", &[frontend.ip(), cart.ip()]).unwrap();
    wire.assert_served(&ways);

    mesh.ca.stop().unwrap();
    // Node 1's ztunnel restarts while the CA is down: its successor finds cart running but
    // cannot get its certificate, so cart must stay refused and the node unready.
    mesh.ztunnel(1).stop().unwrap();
    mesh.replace_ztunnel(1).unwrap();
    let restarted = Instant::now();
    while restarted.elapsed() < Duration::from_secs(15) {
        let when = format!("{:?} after the restart", restarted.elapsed());
        let kind = "a connection from/to cart (no certificate) was not refused";
        wire.try_ways(&mut findings, &ways, Exchange::refused, kind, &when);
        findings.check(
            unready(&mesh.cluster, 1),
            "readiness not 503 while cart-0 has no certificate (CA down)",
            || {
                format!(
                    "{when}: {}; node 1: {}",
                    describe_readiness(&mesh.cluster, 1),
                    describe_pods_and_certificates(&mesh.cluster, 1)
                )
            },
        );
        std::thread::sleep(Duration::from_secs(2));
    }

    // The CA comes back. Nothing else changes: no manifest is touched from here on.
    mesh.ca = mesh.spawn_ca().unwrap();
    let back = Instant::now();
    let kind = "not served again after the CA returned (nothing else changed)";
    wire.recover_ways(&mut findings, &ways, RECOVERY, kind, || {
        format!(
            "node 1: {}; its log: {:?}",
            describe_pods_and_certificates(&mesh.cluster, 1),
            log_lines_containing(&mesh.ztunnels[1].log().unwrap(), "cart-0", 4)
        )
    });
    let left = RECOVERY.saturating_sub(back.elapsed());
    check_ready_within(
        &mut findings,
        &mesh.cluster,
        1,
        left,
        "node 1 not ready after the CA returned",
    );
    wire.finish(&mut findings).unwrap();
    findings.finish("CA down across a ztunnel restart");
}

/// `(notBefore, notAfter)` of every certificate in node `node`'s `/config_dump`.
fn certificate_windows(cluster: &Cluster, node: usize) -> Vec<(String, u64, u64)> {
    let dump = node_config_dump(cluster, node).unwrap();
    dump.certificates
        .into_iter()
        .filter_map(|c| Some((c.identity, c.not_before?, c.not_after?)))
        .collect()
}

/// The long one (~4 minutes): certificates of 60 s and the CA down for 3 minutes. Two kinds
/// of connection are tried after expiry: tunnels over HBONE connections pooled while the
/// certificates were valid (frontend ⇄ cart), and a first connection from reviews-0, which
/// needs a new mTLS handshake.
#[test]
fn fault_3_long_cert_ttl_60s_with_the_ca_down_3_minutes_expired_certificates_refuse_and_unready() {
    let (shop, _frontend_echo) =
        shop_both_ways(MeshOptions::default().ztunnel_args(["--cert-ttl", "60s"]));
    let Shop {
        mut mesh,
        frontend,
        cart,
        echo: _cart_echo,
    } = shop;
    let reviews = mesh
        .add_pod(
            PodSpec::new("shop", "reviews-0")
                .on_node(0)
                .service_account("reviews"),
        )
        .unwrap();
    let ways = both_ways(&frontend, &cart);
    let fresh = [(&reviews, cart.addr(8080))];
    let mut findings = Findings::default();

    // The CA takes 60 s as asked (its --max-ttl bounds from above only): each certificate
    // lives 60 s after issuance plus the CA's back-dating of a tenth of that.
    for node in 0..2 {
        let windows = certificate_windows(&mesh.cluster, node);
        assert_eq!(windows.len(), [2, 1][node], "node {node}: {windows:?}");
        for (identity, not_before, not_after) in windows {
            let lifetime = not_after - not_before;
            assert!(
                (60..=66).contains(&lifetime),
                "{identity} lives {lifetime}s, not 60 s"
            );
        }
    }
    assert!(mesh.ca.log().unwrap().contains("ttl_seconds=60"));

    let meshed = [frontend.ip(), cart.ip(), reviews.ip()];
    let mut wire = Wire::start(&mesh.cluster, "EXPIRY", &meshed).unwrap();
    wire.assert_served(&ways);

    mesh.ca.stop().unwrap();
    let down = Instant::now();
    // The certificates in hand keep serving until they expire.
    let kind = "valid certificates stopped serving as soon as the CA went down";
    wire.try_ways(&mut findings, &ways, Exchange::served, kind, "at once");
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
        let when = format!("{:?} after the CA went down", down.elapsed());
        let kind = "a tunnel over an HBONE connection pooled before expiry was served after every certificate expired";
        wire.try_ways(&mut findings, &ways, Exchange::refused, kind, &when);
        let kind = "a new mTLS handshake with expired certificates was not refused";
        wire.try_ways(&mut findings, &fresh, Exchange::refused, kind, &when);
        for node in 0..2 {
            findings.check(
                unready(&mesh.cluster, node),
                "readiness not 503 with expired certificates",
                || {
                    format!(
                        "node {node}, {when}: {}; {}",
                        describe_readiness(&mesh.cluster, node),
                        describe_pods_and_certificates(&mesh.cluster, node)
                    )
                },
            );
        }
        std::thread::sleep(Duration::from_secs(10));
    }

    // The CA returns; nothing else changes. Every certificate is renewed, a new handshake
    // (reviews-0 → cart) succeeds and both nodes are ready again.
    mesh.ca = mesh.spawn_ca().unwrap();
    let back = Instant::now();
    let evidence = || {
        format!(
            "now={} node 0: {}; node 1: {}",
            now_unix(),
            describe_pods_and_certificates(&mesh.cluster, 0),
            describe_pods_and_certificates(&mesh.cluster, 1)
        )
    };
    let renewed = poll_until(RECOVERY, RETRY, || {
        let now = now_unix();
        (0..2)
            .flat_map(|node| certificate_windows(&mesh.cluster, node))
            .all(|(_, _, not_after)| not_after > now)
            .then_some(())
    });
    eprintln!(
        "CA back: certificates renewed after {:?}",
        renewed.as_ref().map(|r| r.1)
    );
    findings.check(
        renewed.is_some(),
        "certificates not renewed within seconds of the CA's return",
        || format!("within {RECOVERY:?}; {}", evidence()),
    );
    let kind = "a new handshake not served after the CA returned";
    wire.recover_ways(&mut findings, &fresh, RECOVERY, kind, evidence);
    let kind = "frontend ⇄ cart not served after the CA returned";
    wire.recover_ways(&mut findings, &ways, RECOVERY, kind, evidence);
    for node in 0..2 {
        let left = RECOVERY.saturating_sub(back.elapsed());
        let kind = "not ready again after the CA returned";
        check_ready_within(&mut findings, &mesh.cluster, node, left, kind);
    }
    wire.finish(&mut findings).unwrap();
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
    let pod = |name: &str, node: usize, account: &str| {
        PodSpec::new("shop", name)
            .on_node(node)
            .service_account(account)
            .port(8080)
    };
    let frontend = mesh.add_pod(pod("frontend-0", 0, "frontend")).unwrap();
    let cart = mesh.add_pod(pod("cart-0", 1, "cart")).unwrap();
    for (node, name) in [(0, "frontend-0"), (1, "cart-0")] {
        mesh.wait_until_enrolled(node, &[name]).unwrap();
    }
    let _echoes = [&frontend, &cart].map(|p| app().echo_server(p.netns(), 8080).unwrap());
    let ways = both_ways(&frontend, &cart);
    let mut findings = Findings::default();
    let mut wire = Wire::start(&mesh.cluster, "APIDOWN", &[frontend.ip(), cart.ip()]).unwrap();
    wire.assert_served(&ways);
    mesh.wait_for_access(1, Duration::from_secs(20), |l| {
        l.get("src.identity") == Some(FRONTEND) && l.get("dst.identity") == Some(CART)
    })
    .unwrap();
    let mut established = connect_from(&frontend, cart.addr(8080)).unwrap();

    mesh.api.stop_apiserver();
    let down = Instant::now();
    let mut round = 0;
    loop {
        let when = format!("{:?} after the API server went down", down.elapsed());
        let live = format!("APIDOWN-LIVE-{round}-MARKER");
        wire.note_marker(&live);
        let echoed = echo_once(&mut established, live.as_bytes());
        findings.check(
            echoed.as_deref().ok() == Some(live.as_bytes()),
            "an established connection broke while the API server was down",
            || format!("{when}: {echoed:?}"),
        );
        if down.elapsed() >= Duration::from_secs(120) {
            break;
        }
        let kind = "a new connection between known pods failed while the API server was down";
        wire.try_ways(&mut findings, &ways, Exchange::served, kind, &when);
        for node in 0..2 {
            let answer = describe_readiness(&mesh.cluster, node);
            findings.check(
                answer.starts_with("200"),
                "a node went unready while the API server was down",
                || format!("node {node}, {when}: {answer}"),
            );
        }
        round += 1;
        std::thread::sleep(Duration::from_secs(10));
    }
    // The fault was real: the node agents saw their watches fail.
    for node in 0..2 {
        let log = mesh.ztunnels[node].log().unwrap();
        assert!(
            log.contains("watch failed"),
            "node {node} never noticed the outage"
        );
    }
    let inbound_after = mesh.ztunnels[1].log_len().unwrap();

    mesh.api.start_apiserver().unwrap();
    let back = Instant::now();
    // A change made after it returns reaches both node agents within seconds: a Pod object
    // (no sandbox needed to be listed)…
    create_pod_object(&mesh, "late-0", mesh.cluster.node(1).name());
    for node in 0..2 {
        let seen = wait_for_node_dump(&mesh.cluster, node, "late-0 is listed", RECOVERY, |d| {
            d.workload_named("late-0").is_some()
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
    // …and a real new pod, which joins the mesh and is served in mTLS.
    let cart1 = mesh.add_pod(pod("cart-1", 1, "cart"));
    findings.check(
        cart1.is_ok(),
        "a pod added after the API server returned could not join",
        || format!("{:?}", cart1.as_ref().err()),
    );
    if let Ok(cart1) = &cart1 {
        let _echo = app().echo_server(cart1.netns(), 8080).unwrap();
        wire.add_meshed(cart1.ip());
        let kind = "the new pod was not served";
        wire.recover_ways(
            &mut findings,
            &[(&frontend, cart1.addr(8080))],
            RECOVERY,
            kind,
            String::new,
        );
        let hbone = cart1.addr(15008).to_string();
        let line = mesh.ztunnels[1].wait_for_line_from(
            inbound_after,
            "cart-1's mTLS line",
            RECOVERY,
            |l| {
                let line = AccessLine::parse(l);
                l.contains("connection complete")
                    && line.get("src.identity") == Some(FRONTEND)
                    && line.get("dst.identity") == Some(CART)
                    && [line.get("dst.addr"), line.get("dst.hbone_addr")]
                        .contains(&Some(hbone.as_str()))
            },
        );
        findings.check(line.is_ok(), "no mTLS access line for the new pod", || {
            format!("{:?}", line.err())
        });
    }
    wire.finish(&mut findings).unwrap();
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
    let way = [(&frontend, cart.addr(8080))];
    let mut findings = Findings::default();
    let mut wire = Wire::start(&mesh.cluster, "BADPOLICY", &[frontend.ip(), cart.ip()]).unwrap();
    wire.assert_served(&way);

    // The only ALLOW for cart, with a prefix length no IPv4 block has.
    let file = "policy-cart-allow.yaml";
    mesh.cluster
        .put_manifest(file, vec![cart_allow(json!({"ipBlocks": ["10.0.0.0/33"]}))])
        .unwrap();
    let dump = mesh
        .wait_for_dump(1, "the broken policy is reported", |d| {
            d.invalid_policies.iter().any(|p| p.name == "cart-allow")
        })
        .unwrap();
    let reported = as_json(&dump.invalid_policies[0]);
    assert!(reported.contains("ipBlocks"), "{reported}");
    let offset = mesh.ztunnel(1).log_len().unwrap();
    for round in 0..3 {
        let kind = "cart served a connection under a broken ALLOW";
        let when = format!("try {round}");
        wire.try_ways(&mut findings, &way, Exchange::refused, kind, &when);
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
    let fixed = json!({"principals": ["cluster.local/ns/shop/sa/frontend"]});
    mesh.cluster
        .put_manifest(file, vec![cart_allow(fixed)])
        .unwrap();
    let at = Instant::now();
    wire.recover_ways(
        &mut findings,
        &way,
        RECOVERY,
        "access not restored after the fix",
        || {
            format!(
                "{:?}",
                mesh.config_dump(1).map(|d| as_json(&d.invalid_policies))
            )
        },
    );
    let cleared = poll_until(RECOVERY.saturating_sub(at.elapsed()), RETRY, || {
        mesh.config_dump(1)
            .ok()
            .filter(|d| d.invalid_policies.is_empty())
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
    wire.finish(&mut findings).unwrap();
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
    let to_cart = [(&frontend, cart.addr(8080))];
    let mut findings = Findings::default();
    let mut wire = Wire::start(&mesh.cluster, "LOSTDEL", &[frontend.ip(), cart.ip()]).unwrap();
    wire.assert_served(&to_cart);
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
    wire.add_meshed(orphan.ip());
    let orphan_echo = app().echo_server(orphan.netns(), 8080).unwrap();
    mesh.wait_for_dump(1, "orphan-0 is enrolled", |d| {
        d.enrolled_names().contains(&"orphan-0")
    })
    .unwrap();
    wire.assert_served(&[(&frontend, orphan.addr(8080))]);
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
        d.workload_named("orphan-0").is_none()
    })
    .unwrap();
    let released = poll_until(Duration::from_secs(30), Duration::from_millis(500), || {
        let dump = mesh.config_dump(1).ok()?;
        let enrolled = !dump.enrolled_names().contains(&"orphan-0");
        let namespace = fds_on_netns(ztunnel, inode).ok()? == 0;
        let fds = open_fds(ztunnel).ok()? <= baseline + 4;
        (enrolled && namespace && fds).then_some(())
    });
    findings.check(released.is_some(), "the pod of a lost CNI DEL is never unenrolled", || {
        format!(
            "30 s after it left the cluster view: {}; fds on its deleted namespace: {:?}; open fds {:?} (baseline {baseline}); still listening there: {:?}",
            describe_pods_and_certificates(&mesh.cluster, 1),
            fds_on_netns(ztunnel, inode),
            open_fds(ztunnel),
            listeners_in_held_netns(ztunnel, inode)
        )
    });
    // Its certificate outlives the last pod of the identity by 30 s (a pod of the same service
    // account started meanwhile would reuse it), then is forgotten too.
    let forgotten = poll_until(Duration::from_secs(40), Duration::from_millis(500), || {
        let dump = mesh.config_dump(1).ok()?;
        dump.certificates
            .iter()
            .all(|c| !c.identity.ends_with("/sa/orphan"))
            .then_some(())
    });
    findings.check(
        forgotten.is_some(),
        "the certificate of a lost CNI DEL's pod is never released",
        || describe_pods_and_certificates(&mesh.cluster, 1),
    );
    // The rest of the node is unaffected.
    let kind = "cart not served after the lost DEL";
    wire.try_ways(
        &mut findings,
        &to_cart,
        Exchange::served,
        kind,
        "at the end",
    );
    wire.finish(&mut findings).unwrap();
    findings.finish("lost CNI DEL");
}
