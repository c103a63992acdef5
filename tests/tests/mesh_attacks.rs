//! Hostile calls against the mesh: pods and well-credentialled peers aiming at ztunnel's own
//! ports (a self-call loop there is a node-wide outage), and peers lying about their source
//! address. Every attempt must end quickly, leave ztunnel's file descriptors where they were,
//! and change nothing for the workloads that behave.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ambit_tests::scenario::{connect_from, testapp as app, Shop};
use ambit_tests::{Mesh, MeshUnderTest, Pod, PodSpec};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);
/// ztunnel's ports (DESIGN §3).
const ZTUNNEL_PORTS: [u16; 7] = [15000, 15001, 15006, 15008, 15020, 15021, 15053];

/// How one hostile connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Connect refused or reset: nothing listens, or ztunnel said no.
    Refused,
    /// Accepted, then closed by the far end after this many bytes of answer.
    Closed(usize),
    /// Still open when the client gave up: the call hangs somewhere (e.g. looping).
    Hung,
}

/// Connects from inside `pod`, sends an HTTP request and reads until the far end closes.
fn attempt(pod: &Pod, target: SocketAddr) -> Outcome {
    let mut stream = match connect_from(pod, target) {
        Ok(stream) => stream,
        Err(_) => return Outcome::Refused,
    };
    let _ = stream.write_all(b"GET / HTTP/1.1\r\nhost: attack\r\nconnection: close\r\n\r\n");
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => Outcome::Closed(answer.len()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Outcome::Hung,
        Err(_) if answer.is_empty() => Outcome::Refused,
        Err(_) => Outcome::Closed(answer.len()),
    }
}

/// ztunnel's open descriptors, from /proc.
fn open_fds(pid: u32) -> usize {
    ambit_tests::faults::open_fds(pid).unwrap()
}

fn access_lines(mesh: &Mesh) -> usize {
    (0..mesh.ztunnels.len())
        .map(|node| mesh.access_log(node).unwrap().len())
        .sum()
}

/// Waits until every ztunnel is back to (at most a few above) its baseline of open fds.
fn assert_fds_settle(mesh: &Mesh, baseline: &[usize]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now: Vec<usize> = mesh.ztunnels.iter().map(|z| open_fds(z.pid())).collect();
        if now.iter().zip(baseline).all(|(now, base)| *now <= base + 4) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ztunnel file descriptors did not return to baseline: {baseline:?} → {now:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Issues a certificate for `identity` from the mesh's own root, as a stolen-but-valid
/// credential; returns the directory with tls.crt, tls.key and ca.crt.
fn issue_valid_certificate(mesh: &Mesh, identity: &str) -> PathBuf {
    let out = mesh
        .cluster
        .root_dir()
        .join(format!("stolen-{}", identity.rsplit('/').next().unwrap()));
    let output = std::process::Command::new(&mesh.binaries.ambit_ca)
        .arg("issue")
        .arg("--dir")
        .arg(mesh.ca_dir())
        .args(["--identity", identity, "--out-dir"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

fn hbone_client() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ambit-hbone-client"))
}

/// One CONNECT from inside `from` to `hbone` with the given authority (and `forwarded`).
fn connect_with_certificate(
    from: &Pod,
    cert_dir: &Path,
    hbone: SocketAddr,
    server_identity: &str,
    authority: SocketAddr,
    forwarded: Option<SocketAddr>,
) -> String {
    let mut command = from.netns().command(hbone_client());
    command
        .arg("--hbone")
        .arg(hbone.to_string())
        .arg("--authority")
        .arg(authority.to_string())
        .arg("--cert-dir")
        .arg(cert_dir)
        .args(["--server-identity", server_identity]);
    if let Some(forwarded) = forwarded {
        command.arg("--forwarded").arg(forwarded.to_string());
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

const CART_IDENTITY: &str = "spiffe://cluster.local/ns/shop/sa/cart";
const FRONTEND_IDENTITY: &str = "spiffe://cluster.local/ns/shop/sa/frontend";

#[test]
fn calls_to_ztunnels_own_ports_are_refused_without_looping() {
    let Shop {
        mut mesh,
        frontend,
        cart,
        echo: _echo,
    } = Shop::start().unwrap();
    let outsider = mesh
        .add_pod(PodSpec::new("legacy", "outsider-0").on_node(0))
        .unwrap();
    // Warm up the path the test later checks still works, so its pooled tunnel is part of the
    // baseline.
    let warm = app()
        .echo_client(frontend.netns(), cart.addr(8080), 1024, None)
        .unwrap();
    assert!(warm.intact(), "{warm:?}");
    let baseline: Vec<usize> = mesh.ztunnels.iter().map(|z| open_fds(z.pid())).collect();
    let lines_before = access_lines(&mesh);

    let node_ip = IpAddr::V4(mesh.cluster.node(0).ip());
    let mut attempts = 0;
    let mut hung = Vec::new();
    for (who, pod) in [
        ("meshed pod", &frontend),
        ("pod outside the mesh", &outsider),
    ] {
        let targets: [(&str, IpAddr); 4] = [
            ("own IP", IpAddr::V4(pod.ip())),
            ("meshed peer", IpAddr::V4(cart.ip())),
            ("loopback", "127.0.0.1".parse().unwrap()),
            ("node IP", node_ip),
        ];
        for (what, ip) in targets {
            for port in ZTUNNEL_PORTS {
                let target = SocketAddr::new(ip, port);
                attempts += 1;
                if attempt(pod, target) == Outcome::Hung {
                    hung.push(format!("{who} → {what} {target}"));
                }
            }
        }
    }
    assert!(hung.is_empty(), "these calls hung (a loop?): {hung:#?}");

    // A peer with a valid certificate asks cart's ztunnel for its own ports.
    let stolen = issue_valid_certificate(&mesh, FRONTEND_IDENTITY);
    let cart_hbone = cart.addr(15008);
    let mut authorities: Vec<SocketAddr> = ZTUNNEL_PORTS.iter().map(|&p| cart.addr(p)).collect();
    authorities.push("127.0.0.1:15001".parse().unwrap());
    authorities.push(SocketAddr::new(
        IpAddr::V4(mesh.cluster.node(1).ip()),
        15020,
    ));
    for authority in authorities {
        attempts += 1;
        let answer = connect_with_certificate(
            &outsider,
            &stolen,
            cart_hbone,
            CART_IDENTITY,
            authority,
            None,
        );
        assert_eq!(answer, "status=400", "CONNECT to {authority}");
    }

    // One request to cart's capture port made ~50 000 access lines when it looped; now each
    // attempt leaves at most one line per hop.
    std::thread::sleep(Duration::from_secs(1));
    let new_lines = access_lines(&mesh) - lines_before;
    assert!(
        new_lines <= attempts * 2,
        "{attempts} attempts produced {new_lines} access lines: something loops"
    );
    let refusal = mesh
        .wait_for_access(1, WAIT, |l| {
            l.get("error")
                .is_some_and(|e| e.contains("is ztunnel's own port 15001"))
        })
        .unwrap();
    assert!(
        refusal.raw.contains("call the application's port instead"),
        "the refusal says what to do: {}",
        refusal.raw
    );
    assert_fds_settle(&mesh, &baseline);
    for ztunnel in &mut mesh.ztunnels {
        assert!(ztunnel.try_exit_status().unwrap().is_none(), "ztunnel died");
        let log = ztunnel.log().unwrap();
        assert!(!log.contains("Too many open files"), "fd exhaustion");
    }
    let after = app()
        .echo_client(frontend.netns(), cart.addr(8080), 64 * 1024, None)
        .unwrap();
    assert!(after.intact(), "the mesh still works: {after:?}");
}

#[test]
fn a_forged_forwarded_header_does_not_change_who_the_peer_is() {
    let Shop {
        mut mesh,
        frontend,
        cart,
        echo: _echo,
    } = Shop::start().unwrap();
    let attacker = mesh
        .add_pod(PodSpec::new("legacy", "attacker-0").on_node(0))
        .unwrap();
    // Only frontend's address may reach cart.
    let allowed = frontend.ip().to_string();
    mesh.cluster
        .put_manifest(
            "policy-only-frontend-ip.yaml",
            vec![json!({
                "apiVersion": "security.istio.io/v1",
                "kind": "AuthorizationPolicy",
                "metadata": {"name": "only-frontend-ip", "namespace": "shop"},
                "spec": {
                    "selector": {"matchLabels": {"app": "cart"}},
                    "action": "DENY",
                    "rules": [{"from": [{"source": {"notIpBlocks": [format!("{allowed}/32")]}}]}]
                }
            })],
        )
        .unwrap();
    mesh.wait_for_dump(1, "the policy is loaded", |dump| {
        dump.has_policy("only-frontend-ip")
    })
    .unwrap();

    // The real frontend passes.
    let report = app()
        .echo_client(frontend.netns(), cart.addr(8080), 1024, None)
        .unwrap();
    assert!(report.intact(), "{report:?}");

    // A valid certificate, a lie about the source: refused, and logged with the real peer.
    let stolen = issue_valid_certificate(&mesh, FRONTEND_IDENTITY);
    let answer = connect_with_certificate(
        &attacker,
        &stolen,
        cart.addr(15008),
        CART_IDENTITY,
        cart.addr(8080),
        Some(SocketAddr::new(IpAddr::V4(frontend.ip()), 40000)),
    );
    assert_eq!(answer, "status=401", "the forged source must not pass");
    let denied = mesh
        .wait_for_access(1, WAIT, |l| {
            l.get("error").is_some()
                && l.get("src.addr")
                    .is_some_and(|a| a.starts_with(&format!("{}:", attacker.ip())))
        })
        .unwrap();
    assert!(
        denied
            .get("error")
            .unwrap()
            .contains("shop/only-frontend-ip"),
        "{}",
        denied.raw
    );
    let forged = format!("{}:40000", frontend.ip());
    assert!(
        mesh.access_log(1)
            .unwrap()
            .iter()
            .all(|l| l.get("src.addr") != Some(forged.as_str())),
        "no access line may name the forged source address"
    );
}
