//! The embedded-mode demo: a two-node mesh in network namespaces, real traffic across nodes,
//! and the access-log lines that show both SPIFFE identities; then L7 through a waypoint (a
//! header route and a 90/10 canary). Run by `scripts/demo.sh` (root).

#[path = "ambit-demo/l7.rs"]
mod l7;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::Duration;

use ambit_tests::{Labels, Mesh, MeshUnderTest, PodSpec, ServiceSpec, TestApp};

/// A heading, bold on a terminal only (the same rule as the logs: `demo.sh > file` or a pipe
/// gets no escape codes, nor does `NO_COLOR`).
pub(crate) fn step(text: &str) {
    let no_color = std::env::var("NO_COLOR").ok();
    if runtime::logging::use_colour(std::io::stdout().is_terminal(), no_color.as_deref()) {
        println!("\n\x1b[1m==> {text}\x1b[0m");
    } else {
        println!("\n==> {text}");
    }
}

fn main() {
    if let Err(error) = run() {
        eprintln!("demo failed: {error}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let app = TestApp::locate()?;
    step("Starting a 2-node cluster in network namespaces: ambit-ca on the control plane, one ztunnel per node, ambit-cni chained after the bridge plugin");
    let mut mesh = Mesh::start(2)?;
    println!(
        "    cluster {} ({}), CA at {}:15012",
        mesh.cluster.prefix(),
        mesh.cluster.subnet(),
        mesh.cluster.control_plane_ip()
    );

    step("kubectl label namespace shop istio.io/dataplane-mode=ambient   (namespace legacy stays out of the mesh)");
    mesh.cluster.set_namespace_labels(
        "shop",
        Labels::from([("istio.io/dataplane-mode".to_string(), "ambient".to_string())]),
    )?;

    step("Scheduling pods: shop/frontend-0 and legacy/batch-0 on node-0, shop/cart-0 and legacy/db-0 on node-1");
    let frontend = mesh.add_pod(
        PodSpec::new("shop", "frontend-0")
            .on_node(0)
            .service_account("frontend"),
    )?;
    let batch = mesh.add_pod(PodSpec::new("legacy", "batch-0").on_node(0))?;
    let cart = mesh.add_pod(
        PodSpec::new("shop", "cart-0")
            .on_node(1)
            .service_account("cart")
            .label("app", "cart")
            .port(8080),
    )?;
    let db = mesh.add_pod(PodSpec::new("legacy", "db-0").on_node(1).port(5432))?;
    let service = mesh.cluster.add_service(
        ServiceSpec::new("shop", "cart")
            .selector("app", "cart")
            .port("tcp", 80, 8080),
    )?;
    let _cart_server = app.echo_server(cart.netns(), 8080)?;
    let _db_server = app.echo_server(db.netns(), 5432)?;
    // As kube-proxy's rules lag a new Service, ztunnel learns it within a poll interval; a
    // connection to the VIP before that would pass through unmeshed (to an address no pod has).
    mesh.wait_for_services(&[("shop", "cart")])?;
    for (pod, ip) in [
        (&frontend, frontend.ip()),
        (&batch, batch.ip()),
        (&cart, cart.ip()),
        (&db, db.ip()),
    ] {
        println!(
            "    {}/{} {ip} on node-{}",
            pod.namespace(),
            pod.name(),
            pod.node()
        );
    }
    let vip = SocketAddr::from((service.vip, 80));
    println!("    service shop/cart {vip} → cart-0:8080");

    let capture = mesh.cluster.capture("tcp")?;
    let hops = [
        (
            "shop/frontend-0 → shop/cart-0  (pod IP)     ",
            &frontend,
            cart.addr(8080),
            "demo-hop-mesh-pod ",
        ),
        (
            "shop/frontend-0 → shop/cart    (service VIP)",
            &frontend,
            vip,
            "demo-hop-mesh-vip ",
        ),
        (
            "legacy/batch-0  → shop/cart-0  (plaintext in)",
            &batch,
            cart.addr(8080),
            "demo-hop-legacy-in ",
        ),
        (
            "shop/frontend-0 → legacy/db-0  (passthrough)",
            &frontend,
            db.addr(5432),
            "demo-hop-passthrough ",
        ),
    ];
    step("Sending traffic across nodes");
    for (what, from, to, text) in &hops {
        let report = app.echo_client(from.netns(), *to, 256 * 1024, Some(text))?;
        println!(
            "    {what}: {} KiB echoed back intact: {}",
            report.sent / 1024,
            report.intact()
        );
    }
    let packets = capture.stop()?;
    std::thread::sleep(Duration::from_millis(300));

    for node in 0..2 {
        step(&format!(
            "kubectl logs ztunnel on node-{node}   (one line per connection)"
        ));
        for line in mesh.access_log(node)? {
            let text = line
                .raw
                .split("connection complete")
                .nth(1)
                .unwrap_or(&line.raw);
            println!("    {}", text.trim());
        }
    }
    step("What crossed the wire between the nodes (tcpdump on the link)");
    println!(
        "    {} packets, HBONE port 15008 seen: {}",
        packets.len(),
        packets.has_tcp_port(15008)
    );
    for (what, _, _, text) in &hops {
        let verdict = if packets.contains(text.as_bytes()) {
            "visible in clear"
        } else {
            "encrypted (mTLS)"
        };
        println!("    {what}: {verdict}");
    }
    l7::run(&mut mesh, &app, &frontend)?;

    step("Tearing down (namespaces, links and processes are removed)");
    drop(mesh);
    println!("    done.");
    Ok(())
}
