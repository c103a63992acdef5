//! The demo's L7 part: namespace `shop` gets a waypoint; an HTTPRoute on Service `reviews` sends
//! a "beta" user to v2 and everyone else 90/10 to v1/v2; the waypoint's access log shows each
//! request with its route, both identities and the pod that answered.

use std::net::SocketAddr;

use ambit_tests::{Mesh, MeshUnderTest, Pod, PodSpec, Process, ProcessSpec, ServiceSpec, TestApp};
use serde_json::json;

use super::step;

type DemoResult<T> = Result<T, Box<dyn std::error::Error>>;

pub fn run(mesh: &mut Mesh, app: &TestApp, frontend: &Pod) -> DemoResult<()> {
    step("L7: kubectl apply Gateway shop/waypoint (class ambit-waypoint); kubectl label namespace shop istio.io/use-waypoint=waypoint");
    let waypoint = mesh.add_waypoint("shop", "waypoint", 0)?;
    mesh.bind_namespace_to_waypoint("shop", "waypoint")?;
    println!(
        "    waypoint shop/waypoint-0 {} on node-0, identity spiffe://cluster.local/ns/shop/sa/waypoint",
        waypoint.pod.ip()
    );

    step("Deploying reviews v1 and v2 on node-1 (HTTP echo apps) behind Service shop/reviews");
    let mut echoes: Vec<Process> = Vec::new();
    for version in ["v1", "v2"] {
        let name = format!("reviews-{version}-0");
        let pod = mesh.add_pod(
            PodSpec::new("shop", &name)
                .on_node(1)
                .label("app", "reviews")
                .label("version", version)
                .service_account(&format!("reviews-{version}")),
        )?;
        let mut echo = pod.spawn(
            ProcessSpec::new(app.path())
                .name(format!("echo-{name}"))
                .args(["mesh-echo", "--pod", &name, "--namespace", "shop"])
                .args(["--version", version, "--http", "8080"]),
        )?;
        echo.wait_for_log("mesh-echo ready", std::time::Duration::from_secs(10))?;
        echoes.push(echo);
        mesh.cluster.add_service(
            ServiceSpec::new("shop", &format!("reviews-{version}"))
                .selector("app", "reviews")
                .selector("version", version)
                .port("http", 80, 8080),
        )?;
    }
    let reviews = mesh.cluster.add_service(
        ServiceSpec::new("shop", "reviews")
            .selector("app", "reviews")
            .port("http", 80, 8080),
    )?;
    mesh.wait_for_services(&[
        ("shop", "reviews"),
        ("shop", "reviews-v1"),
        ("shop", "reviews-v2"),
    ])?;
    let vip = SocketAddr::from((reviews.vip, 80));

    step("kubectl apply HTTPRoute shop/reviews: header end-user=beta → v2, everyone else 90/10 v1/v2");
    mesh.cluster.put_manifest(
        "demo-route-reviews.yaml",
        vec![json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"namespace": "shop", "name": "reviews"},
            "spec": {
                "parentRefs": [{"group": "", "kind": "Service", "name": "reviews", "port": 80}],
                "rules": [
                    {
                        "name": "beta-users",
                        "matches": [{"headers": [{"name": "end-user", "value": "beta"}]}],
                        "backendRefs": [{"name": "reviews-v2", "port": 80}]
                    },
                    {
                        "name": "canary",
                        "backendRefs": [
                            {"name": "reviews-v1", "port": 80, "weight": 90},
                            {"name": "reviews-v2", "port": 80, "weight": 10}
                        ]
                    }
                ]
            }
        })],
    )?;
    // The node agents learn the waypoint binding, and the waypoint the route, within a poll
    // interval (100 ms): until then a request may be refused (fail closed) or take the
    // default route. Retry until the beta user reaches v2.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let answer = send(app, frontend, vip, &["--header", "end-user: beta"]);
        match answer {
            Ok(text) if text.contains("Hostname=reviews-v2-0") => break,
            other if std::time::Instant::now() > deadline => {
                let last = match other {
                    Ok(text) => text,
                    Err(error) => error.to_string(),
                };
                return Err(format!(
                    "the beta user did not reach reviews-v2 through the waypoint within 20 s; last answer: {last}"
                )
                .into());
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    }

    step("Sending 200 requests from shop/frontend-0 to http://reviews, and one as the beta user");
    let summary = send(
        app,
        frontend,
        vip,
        &["--count", "200", "--concurrency", "4"],
    )?;
    let line = summary
        .lines()
        .find(|l| l.starts_with("Summary"))
        .unwrap_or("no summary");
    println!("    canary:    {line}");
    let beta = send(app, frontend, vip, &["--header", "end-user: beta"])?;
    let answered = beta
        .lines()
        .find_map(|l| l.strip_prefix("Hostname="))
        .unwrap_or("nobody");
    println!("    beta user: answered by {answered}");

    step("kubectl logs shop/waypoint-0   (one line per request: route, both identities, the pod that answered)");
    let log = waypoint.process.log()?;
    for line in log
        .lines()
        .filter(|l| l.contains("request complete"))
        .rev()
        .take(3)
    {
        let text = line.split("request complete").nth(1).unwrap_or(line);
        println!("    {}", text.trim());
    }
    drop(echoes);
    drop(waypoint);
    Ok(())
}

/// Runs `mesh-client` from `from` to `vip` with Host `reviews` and `extra` arguments.
fn send(app: &TestApp, from: &Pod, vip: SocketAddr, extra: &[&str]) -> DemoResult<String> {
    let mut args = vec![
        "mesh-client".to_owned(),
        "--connect".to_owned(),
        vip.to_string(),
        "--host".to_owned(),
        "reviews".to_owned(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    Ok(from.exec(app.path(), &args)?)
}
