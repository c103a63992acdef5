//! Who may talk to whom: passthrough for destinations outside the mesh, the 15006 path for
//! clients outside it, AuthorizationPolicy DENY/ALLOW by principal, revocation of live
//! connections when policy changes, and refusal of forged identities.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use ambit_tests::scenario::{connect_from, echo_once, testapp as app, Shop};
use ambit_tests::{Mesh, MeshUnderTest, Pod, PodSpec};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

fn policy(name: &str, action: &str, principals: &[&str]) -> Value {
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "selector": {"matchLabels": {"app": "cart"}},
            "action": action,
            "rules": [{"from": [{"source": {"principals": principals}}]}]
        }
    })
}

/// Applies a policy file and waits until node `node`'s ztunnel has it.
/// The shared shop plus `reviews-0` (SA reviews) on node 0 beside frontend.
fn shop() -> (Shop, Pod) {
    let mut shop = Shop::start().unwrap();
    let reviews = shop
        .mesh
        .add_pod(
            PodSpec::new("shop", "reviews-0")
                .on_node(0)
                .service_account("reviews"),
        )
        .unwrap();
    (shop, reviews)
}

fn apply_policy(mesh: &mut Mesh, node: usize, file: &str, docs: Vec<Value>) {
    let names: Vec<String> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    mesh.cluster.put_manifest(file, docs).unwrap();
    mesh.wait_for_dump(node, "the policy is loaded", |dump| {
        names.iter().all(|name| dump.has_policy(name))
    })
    .unwrap();
}

#[test]
fn a_deny_policy_blocks_one_principal_and_a_policy_change_revokes_live_connections() {
    let (
        Shop {
            mut mesh,
            frontend,
            cart,
            echo: _echo,
        },
        reviews,
    ) = shop();
    apply_policy(
        &mut mesh,
        1,
        "policy-deny-reviews.yaml",
        vec![policy(
            "deny-reviews",
            "DENY",
            &["cluster.local/ns/shop/sa/reviews"],
        )],
    );

    // reviews is refused: the tunnel is reset, and the destination logs which policy said no.
    let refused = app().echo_client(reviews.netns(), cart.addr(8080), 1024, None);
    assert!(
        refused.map(|r| !r.intact()).unwrap_or(true),
        "reviews must not get through"
    );
    let denied = mesh
        .wait_for_access(1, WAIT, |l| {
            l.get("src.identity") == Some("spiffe://cluster.local/ns/shop/sa/reviews")
                && l.get("error").is_some()
        })
        .unwrap();
    assert!(
        denied.get("error").unwrap().contains("shop/deny-reviews"),
        "{}",
        denied.raw
    );

    // An unrelated principal still passes; keep its connection open across a policy change.
    let mut live = connect_from(&frontend, cart.addr(8080)).unwrap();
    assert_eq!(echo_once(&mut live, b"before").unwrap(), b"before");
    apply_policy(
        &mut mesh,
        1,
        "policy-deny-frontend.yaml",
        vec![policy(
            "deny-frontend",
            "DENY",
            &["cluster.local/ns/shop/sa/frontend"],
        )],
    );
    // The live connection is cut: the next exchange fails.
    let after = echo_once(&mut live, b"after!");
    assert!(
        after.is_err(),
        "a connection the new policy denies must be revoked, got {after:?}"
    );
    let revoked = mesh
        .wait_for_access(1, WAIT, |l| {
            l.get("src.identity") == Some("spiffe://cluster.local/ns/shop/sa/frontend")
                && l.get("error").is_some_and(|e| e.contains("revoked"))
        })
        .unwrap();
    assert!(
        revoked.get("error").unwrap().contains("shop/deny-frontend"),
        "{}",
        revoked.raw
    );
    assert!(revoked.bytes("bytes_sent") >= 6, "{}", revoked.raw);
    // And new connections from frontend are refused too.
    assert!(connect_from(&frontend, cart.addr(8080))
        .and_then(|mut s| echo_once(&mut s, b"again"))
        .is_err());
}

#[test]
fn passthrough_to_non_mesh_destinations_and_policy_on_plaintext_clients() {
    let (
        Shop {
            mut mesh,
            frontend,
            cart,
            echo: _echo,
        },
        _reviews,
    ) = shop();
    // "legacy" is not in the mesh.
    let db = mesh
        .add_pod(PodSpec::new("legacy", "db-0").on_node(1).port(5432))
        .unwrap();
    let old_client = mesh
        .add_pod(PodSpec::new("legacy", "batch-0").on_node(0))
        .unwrap();
    let _db_echo = app().echo_server(db.netns(), 5432).unwrap();

    // Mesh pod → non-mesh pod: passed through in plain TCP, logged by the source only.
    let report = app()
        .echo_client(frontend.netns(), db.addr(5432), 64 * 1024, None)
        .unwrap();
    assert!(report.intact(), "{report:?}");
    let passthrough = mesh
        .wait_for_access(0, WAIT, |l| {
            l.get("dst.addr") == Some(&*db.addr(5432).to_string())
        })
        .unwrap();
    assert_eq!(
        passthrough.get("dst.hbone_addr"),
        Some("-"),
        "{}",
        passthrough.raw
    );
    assert_eq!(
        passthrough.get("dst.identity"),
        Some("-"),
        "{}",
        passthrough.raw
    );
    assert_eq!(passthrough.bytes("bytes_sent"), 64 * 1024);

    // Non-mesh pod → mesh pod: arrives in plaintext on 15006, no identity, still proxied.
    let report = app()
        .echo_client(old_client.netns(), cart.addr(8080), 4096, None)
        .unwrap();
    assert!(report.intact(), "{report:?}");
    let plaintext = mesh
        .wait_for_access(1, WAIT, |l| {
            l.get("src.addr")
                .is_some_and(|a| a.starts_with(&format!("{}:", old_client.ip())))
        })
        .unwrap();
    assert_eq!(
        plaintext.get("src.identity"),
        Some("-"),
        "{}",
        plaintext.raw
    );
    assert_eq!(plaintext.get("direction"), Some("inbound"));
    assert_eq!(plaintext.bytes("bytes_recv"), 4096);

    // Policy applies to that path: once cart only ALLOWs frontend, the plaintext client is refused.
    apply_policy(
        &mut mesh,
        1,
        "policy-allow-frontend.yaml",
        vec![policy(
            "allow-frontend",
            "ALLOW",
            &["cluster.local/ns/shop/sa/frontend"],
        )],
    );
    let refused = app().echo_client(old_client.netns(), cart.addr(8080), 4096, None);
    assert!(
        refused.map(|r| !r.intact()).unwrap_or(true),
        "the plaintext client must be refused"
    );
    let denied = mesh
        .wait_for_access(1, WAIT, |l| {
            l.get("src.addr")
                .is_some_and(|a| a.starts_with(&format!("{}:", old_client.ip())))
                && l.get("error").is_some()
        })
        .unwrap();
    assert!(
        denied.get("error").unwrap().contains("none allows"),
        "{}",
        denied.raw
    );
    // frontend, allowed by name, still gets through.
    let report = app()
        .echo_client(frontend.netns(), cart.addr(8080), 4096, None)
        .unwrap();
    assert!(report.intact(), "{report:?}");
}

#[test]
fn a_client_with_a_certificate_from_a_rogue_ca_is_refused_and_the_log_says_why() {
    let (
        Shop {
            mut mesh,
            cart,
            echo: _echo,
            ..
        },
        _reviews,
    ) = shop();
    let attacker = mesh
        .add_pod(PodSpec::new("legacy", "attacker-0").on_node(0))
        .unwrap();
    // A CA nobody trusts mints the frontend identity.
    let rogue = mesh.cluster.root_dir().join("rogue");
    let ca = &mesh.binaries.ambit_ca;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(ca).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (ca_dir, cert_dir) = (rogue.join("ca"), rogue.join("cert"));
    run(&["init", "--dir", ca_dir.to_str().unwrap()]);
    run(&[
        "issue",
        "--dir",
        ca_dir.to_str().unwrap(),
        "--identity",
        "spiffe://cluster.local/ns/shop/sa/frontend",
        "--out-dir",
        cert_dir.to_str().unwrap(),
    ]);

    // Straight at the HBONE port from a pod outside the mesh, with TLS 1.3 and ALPN h2.
    let hbone = format!("{}:15008", cart.ip());
    let output = attacker
        .netns()
        .command("openssl")
        .args([
            "s_client", "-connect", &hbone, "-tls1_3", "-alpn", "h2", "-cert",
        ])
        .arg(cert_dir.join("tls.crt"))
        .arg("-key")
        .arg(cert_dir.join("tls.key"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed by scripts/setup.sh");
    let _ = output;
    let refusal = mesh
        .ztunnel(1)
        .wait_for_log("hbone connection refused", WAIT)
        .unwrap();
    assert!(
        refusal.contains("not signed by a trusted root"),
        "{refusal}"
    );
    // No access was granted: nothing reached the app from the attacker.
    assert!(mesh.access_log(1).unwrap().iter().all(|l| l
        .get("src.addr")
        .is_none_or(|a| !a.starts_with(&attacker.ip().to_string()))));
}

#[test]
fn a_bad_manifest_edit_keeps_the_last_good_state() {
    let (
        Shop {
            mut mesh,
            frontend,
            cart,
            echo: _echo,
        },
        _reviews,
    ) = shop();
    mesh.cluster.put_manifest("zz-broken.yaml", vec![json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "broken", "namespace": "shop"}, "spec": {"nodeName": 42, "containers": "nope"}})]).unwrap();
    let dump = mesh
        .wait_for_dump(0, "the bad edit is reported", |dump| {
            dump.manifest_error.is_some()
        })
        .unwrap();
    let error = dump.manifest_error.unwrap();
    assert!(error.contains("zz-broken.yaml"), "{error}");
    // Everything that worked still works.
    let report = app()
        .echo_client(frontend.netns(), cart.addr(8080), 64 * 1024, None)
        .unwrap();
    assert!(report.intact());
    assert!(
        mesh.ztunnel(0).try_exit_status().unwrap().is_none(),
        "ztunnel must survive bad input"
    );
    mesh.cluster.remove_manifest("zz-broken.yaml").unwrap();
    mesh.wait_for_dump(0, "the error clears", |dump| dump.manifest_error.is_none())
        .unwrap();
}

#[test]
fn garbage_on_the_hbone_port_is_refused_without_harm() {
    let (
        Shop {
            mut mesh,
            frontend,
            cart,
            echo: _echo,
        },
        _reviews,
    ) = shop();
    let outsider = mesh
        .add_pod(PodSpec::new("legacy", "curious-0").on_node(0))
        .unwrap();
    for payload in [
        &b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0][..],
        &[0u8; 4096][..],
    ] {
        if let Ok(mut stream) = connect_from(&outsider, SocketAddr::from((cart.ip(), 15008))) {
            let _ = stream.write_all(payload);
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink);
        }
    }
    assert!(
        mesh.ztunnel(1).try_exit_status().unwrap().is_none(),
        "ztunnel must survive garbage"
    );
    let report = app()
        .echo_client(frontend.netns(), cart.addr(8080), 64 * 1024, None)
        .unwrap();
    assert!(report.intact());
}
