//! L7 through a waypoint on the cluster-in-a-box: ztunnel sends traffic for Services bound to
//! the waypoint (`istio.io/use-waypoint`) there over HBONE; the waypoint applies the
//! HTTPRoutes whose parent is the Service and tunnels each request to the chosen pod.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ambit_tests::scenario::testapp as app;
use ambit_tests::waypoint::Waypoint;
use ambit_tests::{Mesh, MeshUnderTest, Pod, PodSpec, ServiceSpec};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

/// `shop` bound to its waypoint (node 0): the client `frontend-0` (node 0) and two versions
/// of `reviews` (node 1), each running the mesh echo app on 8080, behind the Services
/// `reviews`, `reviews-v1` and `reviews-v2` (port 80).
struct Bookshop {
    mesh: Mesh,
    waypoint: Waypoint,
    frontend: Pod,
    reviews_vip: SocketAddr,
    _echoes: Vec<ambit_tests::Process>,
}

fn bookshop() -> Bookshop {
    bookshop_with_waypoint_args(&[])
}

fn bookshop_with_waypoint_args(waypoint_args: &[&str]) -> Bookshop {
    let mut mesh = Mesh::start(2).unwrap();
    mesh.bind_namespace_to_waypoint("shop", "waypoint").unwrap();
    let waypoint = mesh
        .add_waypoint_with_args("shop", "waypoint", 0, waypoint_args)
        .unwrap();
    let frontend = mesh
        .add_pod(
            PodSpec::new("shop", "frontend-0")
                .on_node(0)
                .service_account("frontend"),
        )
        .unwrap();
    let mut echoes = Vec::new();
    for version in ["v1", "v2"] {
        let name = format!("reviews-{version}-0");
        let pod = mesh
            .add_pod(
                PodSpec::new("shop", &name)
                    .on_node(1)
                    .label("app", "reviews")
                    .label("version", version)
                    .service_account(&format!("reviews-{version}")),
            )
            .unwrap();
        let mut echo = pod
            .spawn(
                ambit_tests::ProcessSpec::new(app().path())
                    .name(format!("echo-{name}"))
                    .args(["mesh-echo", "--pod", &name, "--namespace", "shop"])
                    .args(["--version", version, "--http", "8080"]),
            )
            .unwrap();
        echo.wait_for_log("mesh-echo ready", WAIT).unwrap();
        echoes.push(echo);
        mesh.cluster
            .add_service(
                ServiceSpec::new("shop", &format!("reviews-{version}"))
                    .selector("app", "reviews")
                    .selector("version", version)
                    .port("http", 80, 8080),
            )
            .unwrap();
    }
    let reviews = mesh
        .cluster
        .add_service(
            ServiceSpec::new("shop", "reviews")
                .selector("app", "reviews")
                .port("http", 80, 8080),
        )
        .unwrap();
    // Traffic before a node agent knows the VIP would pass through unmeshed.
    mesh.wait_for_services(&[
        ("shop", "reviews"),
        ("shop", "reviews-v1"),
        ("shop", "reviews-v2"),
    ])
    .unwrap();
    Bookshop {
        mesh,
        waypoint,
        frontend,
        reviews_vip: SocketAddr::new(reviews.vip.into(), 80),
        _echoes: echoes,
    }
}

fn http_route(name: &str, rules: Value) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"namespace": "shop", "name": name},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "reviews", "port": 80}],
            "rules": rules,
        }
    })
}

/// What `mesh-client` printed, as `Key=value` pairs in order.
struct Answer(Vec<(String, String)>);

impl Answer {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn status(&self) -> &str {
        self.get("StatusCode").unwrap_or("none")
    }

    fn response_header(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == "ResponseHeader")
            .filter_map(|(_, v)| v.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    }
}

/// Runs `mesh-client` in `from` against `to` (Host `host`) with `extra` flags; its output, or
/// the failure as text (a refused request is an answer too).
fn mesh_client(from: &Pod, to: SocketAddr, host: &str, extra: &[&str]) -> String {
    let to = to.to_string();
    let mut args = vec!["mesh-client", "--connect", &to, "--host", host];
    args.extend_from_slice(extra);
    from.exec(app().path(), &args)
        .unwrap_or_else(|e| e.to_string())
}

impl Answer {
    fn parse(out: &str) -> Answer {
        Answer(
            out.lines()
                .filter_map(|line| line.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }
}

fn request(from: &Pod, to: SocketAddr, host: &str, path: &str, headers: &[&str]) -> Answer {
    let mut extra = vec!["--path", path];
    for header in headers {
        extra.extend(["--header", header]);
    }
    Answer::parse(&mesh_client(from, to, host, &extra))
}

/// Retries `check` until it holds (route changes reach the waypoint within a poll interval).
fn eventually(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + WAIT;
    loop {
        match check() {
            Ok(()) => return,
            Err(why) if Instant::now() > deadline => panic!("{what}: {why}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn header_routing_sends_beta_users_to_v2_and_the_waypoint_logs_both_identities() {
    let mut shop = bookshop();
    shop.mesh
        .cluster
        .put_manifest(
            "route-reviews.yaml",
            vec![http_route(
                "reviews",
                json!([
                    {
                        "matches": [{"headers": [{"name": "end-user", "value": "beta"}]}],
                        "backendRefs": [{"name": "reviews-v2", "port": 80}]
                    },
                    {
                        "filters": [{"type": "ResponseHeaderModifier",
                                     "responseHeaderModifier": {"set": [{"name": "X-Route", "value": "stable"}]}}],
                        "backendRefs": [{"name": "reviews-v1", "port": 80}]
                    }
                ]),
            )],
        )
        .unwrap();

    eventually(
        "an ordinary user reaches v1 through the stable rule",
        || {
            let answer = request(&shop.frontend, shop.reviews_vip, "reviews", "/", &[]);
            match (
                answer.status(),
                answer.get("Hostname"),
                answer.response_header("X-Route"),
            ) {
                ("200", Some("reviews-v1-0"), Some(route)) if route == "stable" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    );
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    eventually(
        "a beta user reaches v2, with the trace context passed on",
        || {
            let answer = request(
                &shop.frontend,
                shop.reviews_vip,
                "reviews",
                "/",
                &["end-user: beta", &format!("traceparent: {traceparent}")],
            );
            let traced = answer.0.iter().any(|(k, v)| {
                k == "RequestHeader"
                    && v.eq_ignore_ascii_case(&format!("traceparent:{traceparent}"))
            });
            match (answer.status(), answer.get("Hostname"), traced) {
                ("200", Some("reviews-v2-0"), true) => Ok(()),
                other => Err(format!("{other:?} {:?}", answer.0)),
            }
        },
    );

    // Istio's request metrics, reported by the waypoint.
    let metrics = shop
        .waypoint
        .pod
        .exec(
            app().path(),
            [
                "http-get",
                "--connect",
                &format!("{}:15020", shop.waypoint.pod.ip()),
                "--path",
                "/stats/prometheus",
                "--body",
            ],
        )
        .unwrap();
    let series = metrics
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("reviews-v2-0"))
        .unwrap_or_else(|| panic!("no istio_requests_total series for reviews-v2-0:\n{metrics}"));
    for label in [
        r#"reporter="waypoint""#,
        r#"source_principal="spiffe://cluster.local/ns/shop/sa/frontend""#,
        r#"destination_principal="spiffe://cluster.local/ns/shop/sa/reviews-v2""#,
        r#"response_code="200""#,
    ] {
        assert!(series.contains(label), "{label} missing in {series}");
    }
    assert!(metrics.contains("istio_request_duration_milliseconds_bucket{"));

    // The waypoint's access line names the route, the client and the endpoint's identity.
    let log = shop.waypoint.process.log().unwrap();
    // The last line to v2 is the beta request's: before the route applied, a request could
    // reach v2 by the Service's own balancing (route="-"), so the first one is not it.
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("request complete") && l.contains("reviews-v2"))
        .unwrap_or_else(|| panic!("no access line for the beta request:\n{log}"));
    for expected in [
        r#"src.identity="spiffe://cluster.local/ns/shop/sa/frontend""#,
        r#"dst.identity="spiffe://cluster.local/ns/shop/sa/reviews-v2""#,
        r#"route="HTTPRoute shop/reviews""#,
        "status=200",
    ] {
        assert!(line.contains(expected), "{expected} missing in {line}");
    }
}

/// The `traceparent` the upstream received, from mesh-echo's `RequestHeader=traceparent:…`.
fn forwarded_traceparent(answer: &Answer) -> Option<String> {
    answer
        .0
        .iter()
        .filter(|(k, _)| k == "RequestHeader")
        .filter_map(|(_, v)| v.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("traceparent"))
        .map(|(_, value)| value.trim().to_owned())
}

/// The spans the collector printed so far.
fn collected_spans(collector: &ambit_tests::Process) -> Vec<Value> {
    collector
        .log()
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("otlp-span "))
        .map(|json| serde_json::from_str(json).unwrap())
        .collect()
}

#[test]
fn the_waypoint_joins_the_callers_trace_and_exports_its_span_over_otlp() {
    let shop = bookshop_with_waypoint_args(&[
        "--otlp-endpoint",
        "http://127.0.0.1:4318",
        "--trace-sampling",
        "100",
    ]);
    // The collector runs beside the waypoint, as a node-local agent would.
    let mut collector = shop
        .waypoint
        .pod
        .spawn(
            ambit_tests::ProcessSpec::new(app().path())
                .name("otlp-collector")
                .args(["otlp-collector", "--listen", "127.0.0.1:4318"]),
        )
        .unwrap();
    collector.wait_for_log("listening on", WAIT).unwrap();

    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let answer = request(
        &shop.frontend,
        shop.reviews_vip,
        "reviews",
        "/books?page=2",
        &[&format!("traceparent: 00-{caller_trace}-{caller_span}-01")],
    );
    assert_eq!(answer.status(), "200", "{:?}", answer.0);
    // Same trace, the waypoint's own span as the parent, still sampled.
    let forwarded = forwarded_traceparent(&answer).expect("the upstream got a traceparent");
    let fields: Vec<&str> = forwarded.split('-').collect();
    assert_eq!(fields.len(), 4, "{forwarded}");
    assert_eq!(
        (fields[0], fields[1], fields[3]),
        ("00", caller_trace, "01")
    );
    let waypoint_span = fields[2].to_owned();
    assert_ne!(
        waypoint_span, caller_span,
        "the waypoint must be a span of its own"
    );

    // A request without trace context starts a trace at the waypoint (100 % sampling here).
    let untraced = request(&shop.frontend, shop.reviews_vip, "reviews", "/", &[]);
    let started = forwarded_traceparent(&untraced).expect("a trace started at the waypoint");
    assert!(
        started.starts_with("00-") && started.ends_with("-01") && !started.contains(caller_trace),
        "{started}"
    );

    // Both spans reach the collector within the export interval.
    let mut spans = Vec::new();
    eventually("the collector has both spans", || {
        spans = collected_spans(&collector);
        match spans.len() {
            2.. => Ok(()),
            n => Err(format!("{n} spans so far")),
        }
    });
    let span = spans
        .iter()
        .find(|s| s["trace_id"] == caller_trace)
        .unwrap_or_else(|| panic!("no span of the caller's trace in {spans:#?}"));
    assert_eq!(span["parent_span_id"], caller_span, "{span:#}");
    assert_eq!(span["span_id"], waypoint_span.as_str(), "{span:#}");
    assert_eq!(span["name"], "GET shop/reviews", "{span:#}");
    assert_eq!(span["kind"], 2, "SPAN_KIND_SERVER: {span:#}");
    assert_eq!(
        span["resource"]["service.name"], "waypoint.shop",
        "{span:#}"
    );
    let attributes = &span["attributes"];
    assert_eq!(attributes["http.request.method"], "GET");
    assert_eq!(attributes["url.path"], "/books");
    assert_eq!(attributes["url.query"], "page=2");
    assert_eq!(attributes["http.response.status_code"], 200);
    assert_eq!(
        attributes["ambit.source.principal"],
        "spiffe://cluster.local/ns/shop/sa/frontend"
    );
    let destination = attributes["ambit.destination.principal"]
        .as_str()
        .unwrap_or_default();
    assert!(
        destination.starts_with("spiffe://cluster.local/ns/shop/sa/reviews-v"),
        "{span:#}"
    );
    assert!(span["end_ns"].as_u64() >= span["start_ns"].as_u64());
    let other = spans
        .iter()
        .find(|s| s["trace_id"] != caller_trace)
        .expect("the span of the trace that started here");
    assert_eq!(other["parent_span_id"], "", "a root span: {other:#}");
    assert!(started.contains(other["trace_id"].as_str().unwrap_or("?")));

    // What the waypoint says about its tracing.
    let dump = shop
        .waypoint
        .pod
        .exec(
            app().path(),
            [
                "http-get",
                "--connect",
                "127.0.0.1:15000",
                "--path",
                "/config_dump",
                "--body",
            ],
        )
        .unwrap();
    let dump: Value = serde_json::from_str(dump.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("config_dump is not JSON ({e}): {dump}"));
    assert_eq!(
        dump["tracing"],
        json!({"otlpEndpoint": "http://127.0.0.1:4318/v1/traces", "samplingPercent": 100.0})
    );

    // The access line carries the trace id, to go from a log line to its trace.
    let log = shop.waypoint.process.log().unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("request complete") && l.contains(caller_trace)),
        "no access line with trace_id={caller_trace}:\n{log}"
    );
}

/// A route splitting `reviews` between v1 and v2 by weight.
fn split(v1: u32, v2: u32) -> Value {
    http_route(
        "reviews-split",
        json!([{
            "backendRefs": [
                {"name": "reviews-v1", "port": 80, "weight": v1},
                {"name": "reviews-v2", "port": 80, "weight": v2}
            ]
        }]),
    )
}

/// `mesh-client --count` output: `Summary requests=N errors=E statuses=200:n,… hostnames=pod:n,…`.
#[derive(Debug)]
struct Summary {
    errors: u32,
    statuses: Vec<(String, u32)>,
    hostnames: Vec<(String, u32)>,
}

impl Summary {
    fn parse(out: &str) -> Summary {
        let line = out
            .lines()
            .find(|l| l.starts_with("Summary "))
            .unwrap_or_else(|| panic!("no Summary line in {out}"));
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .unwrap_or("")
                .to_owned()
        };
        let counts = |text: String| {
            text.split(',')
                .filter(|kv| !kv.is_empty())
                .filter_map(|kv| kv.rsplit_once(':'))
                .map(|(k, v)| (k.to_owned(), v.parse().unwrap_or(0)))
                .collect()
        };
        Summary {
            errors: field("errors").parse().unwrap_or(u32::MAX),
            statuses: counts(field("statuses")),
            hostnames: counts(field("hostnames")),
        }
    }

    fn count(&self, pod: &str) -> u32 {
        self.hostnames
            .iter()
            .find(|(name, _)| name == pod)
            .map_or(0, |(_, n)| *n)
    }

    fn all_ok(&self) -> bool {
        self.errors == 0 && self.statuses.iter().all(|(status, _)| status == "200")
    }
}

fn load(from: &Pod, to: SocketAddr, count: usize, concurrency: usize) -> Summary {
    let (count, concurrency) = (count.to_string(), concurrency.to_string());
    let extra = ["--count", &count, "--concurrency", &concurrency];
    Summary::parse(&mesh_client(from, to, "reviews", &extra))
}

/// Waits until the waypoint serves `generation`-or-later routes: a split that sends all
/// traffic one way shows up as answers from that pod only.
fn wait_for_split(shop: &Bookshop, only: &str) {
    eventually(&format!("all traffic reaches {only}"), || {
        let summary = load(&shop.frontend, shop.reviews_vip, 20, 4);
        if summary.all_ok() && summary.count(only) == 20 {
            Ok(())
        } else {
            Err(format!("{summary:?}"))
        }
    });
}

#[test]
fn weighted_canaries_split_traffic_within_the_conformance_tolerance() {
    let mut shop = bookshop();
    let requests = 1000;
    for (v1, v2) in [(99, 1), (50, 50)] {
        shop.mesh
            .cluster
            .put_manifest("route-split.yaml", vec![split(v1, v2)])
            .unwrap();
        // Let the new weights arrive: 100/0 would be indistinguishable, so poll until v2 shows
        // up for 50/50 and until the route is attached (404s stop) for 99/1.
        std::thread::sleep(Duration::from_millis(500));
        let summary = load(&shop.frontend, shop.reviews_vip, requests, 10);
        assert!(summary.all_ok(), "{v1}/{v2}: {summary:?}");
        let share = f64::from(summary.count("reviews-v2-0")) / requests as f64;
        let expected = f64::from(v2) / 100.0;
        // The Gateway API weight test's tolerance: each share within ±0.05 of its weight.
        assert!(
            (share - expected).abs() <= 0.05,
            "{v1}/{v2}: v2 got {share:.3} of {requests} requests: {summary:?}"
        );
        eprintln!("weights {v1}/{v2}: v2 share {share:.3} over {requests} requests");
    }
}

#[test]
fn shifting_weights_live_under_load_fails_no_request() {
    let mut shop = bookshop();
    shop.mesh
        .cluster
        .put_manifest("route-split.yaml", vec![split(100, 0)])
        .unwrap();
    wait_for_split(&shop, "reviews-v1-0");

    // Constant load from the client while the weights move like an Argo Rollout.
    let mut load_generator = shop
        .frontend
        .spawn(
            ambit_tests::ProcessSpec::new(app().path())
                .name("rollout-load")
                .args(["mesh-client", "--connect", &shop.reviews_vip.to_string()])
                .args(["--host", "reviews", "--count", "3000", "--concurrency", "4"]),
        )
        .unwrap();
    for (v1, v2) in [(90, 10), (50, 50), (0, 100)] {
        std::thread::sleep(Duration::from_millis(700));
        shop.mesh
            .cluster
            .put_manifest("route-split.yaml", vec![split(v1, v2)])
            .unwrap();
    }
    load_generator
        .wait_exit(Duration::from_secs(120))
        .unwrap()
        .expect("the load generator finishes");
    let output = load_generator.log().unwrap();
    let summary = Summary::parse(&output);
    assert!(
        summary.all_ok(),
        "requests failed during the rollout: {output}\nwaypoint:\n{}",
        shop.waypoint.process.log().unwrap()
    );
    assert!(
        summary.count("reviews-v1-0") > 0 && summary.count("reviews-v2-0") > 0,
        "the load spanned the rollout: {summary:?}"
    );
    wait_for_split(&shop, "reviews-v2-0");
}

fn request_as(from: &Pod, to: SocketAddr, method: &str, path: &str) -> Answer {
    let extra = ["--method", method, "--path", path];
    Answer::parse(&mesh_client(from, to, "reviews", &extra))
}

#[test]
fn l7_policy_denies_a_method_and_path_for_one_principal_and_a_bypass_is_refused() {
    let mut shop = bookshop();
    let ops = shop
        .mesh
        .add_pod(
            PodSpec::new("shop", "ops-0")
                .on_node(0)
                .service_account("ops"),
        )
        .unwrap();
    shop.mesh
        .cluster
        .put_manifest(
            "policy-deny-ops-delete.yaml",
            vec![json!({
                "apiVersion": "security.istio.io/v1",
                "kind": "AuthorizationPolicy",
                "metadata": {"namespace": "shop", "name": "deny-ops-delete"},
                "spec": {
                    "targetRefs": [{"kind": "Service", "group": "", "name": "reviews"}],
                    "action": "DENY",
                    "rules": [{
                        "from": [{"source": {"principals": ["cluster.local/ns/shop/sa/ops"]}}],
                        "to": [{"operation": {"methods": ["DELETE"], "paths": ["/admin*"]}}]
                    }]
                }
            })],
        )
        .unwrap();
    eventually("ops may not DELETE /admin", || {
        let answer = request_as(&ops, shop.reviews_vip, "DELETE", "/admin/cache");
        match (answer.status(), answer.get("Hostname")) {
            ("403", None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let get = request_as(&ops, shop.reviews_vip, "GET", "/admin/cache");
    assert_eq!(get.status(), "200", "ops may still GET");
    let other = request_as(&shop.frontend, shop.reviews_vip, "DELETE", "/admin/cache");
    assert_eq!(other.status(), "200", "the policy names ops only");
    let log = shop.waypoint.process.log().unwrap();
    let denial = log
        .lines()
        .find(|l| l.contains("status=403"))
        .unwrap_or_else(|| panic!("no access line for the denial:\n{log}"));
    assert!(
        denial.contains("shop/deny-ops-delete") && denial.contains("response_flags=\"RBAC\""),
        "the denial names its policy: {denial}"
    );

    // A client outside the mesh that dials a pod behind the waypoint directly skips the
    // waypoint's policy: the pod's ztunnel refuses it and says which waypoint was expected.
    shop.mesh
        .cluster
        .set_namespace_labels("legacy", Default::default())
        .unwrap();
    let outsider = shop
        .mesh
        .add_pod(PodSpec::new("legacy", "batch-0").on_node(0))
        .unwrap();
    let reviews_pod = shop
        .mesh
        .cluster
        .pods()
        .iter()
        .find(|p| p.name() == "reviews-v1-0")
        .unwrap()
        .addr(8080);
    let bypass = request(&outsider, reviews_pod, "reviews", "/", &[]);
    assert_ne!(
        bypass.status(),
        "200",
        "the bypass must not be served: {:?}",
        bypass.0
    );
    let node1 = shop.mesh.ztunnels[1].log().unwrap();
    assert!(
        node1.contains(
            "is bound to waypoint shop/waypoint (istio.io/use-waypoint) and plaintext client"
        ),
        "ztunnel says which waypoint was expected:\n{}",
        node1
            .lines()
            .filter(|l| l.contains("refused"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// `name` (label app=`app`) on node 1 running the mesh echo app, optionally failing every
/// request with `status`.
fn echo_pod(
    shop: &mut Bookshop,
    app_label: &str,
    name: &str,
    status: Option<u16>,
) -> ambit_tests::Process {
    let pod = shop
        .mesh
        .add_pod(
            PodSpec::new("shop", name)
                .on_node(1)
                .label("app", app_label),
        )
        .unwrap();
    let mut spec = ambit_tests::ProcessSpec::new(app().path())
        .name(format!("echo-{name}"))
        .args([
            "mesh-echo",
            "--pod",
            name,
            "--namespace",
            "shop",
            "--http",
            "8080",
        ]);
    if let Some(status) = status {
        spec = spec.args(["--status", &status.to_string()]);
    }
    let mut echo = pod.spawn(spec).unwrap();
    echo.wait_for_log("mesh-echo ready", WAIT).unwrap();
    echo
}

#[test]
fn retries_hide_a_failing_endpoint_and_a_request_timeout_answers_504() {
    let mut shop = bookshop();
    let _flaky = echo_pod(&mut shop, "ratings", "ratings-0", Some(503));
    let _healthy = echo_pod(&mut shop, "ratings", "ratings-1", None);
    let ratings = shop
        .mesh
        .cluster
        .add_service(
            ServiceSpec::new("shop", "ratings")
                .selector("app", "ratings")
                .port("http", 80, 8080),
        )
        .unwrap();
    let ratings_vip = SocketAddr::new(ratings.vip.into(), 80);
    shop.mesh.wait_for_services(&[("shop", "ratings")]).unwrap();
    shop.mesh
        .cluster
        .put_manifest(
            "route-ratings.yaml",
            vec![json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"namespace": "shop", "name": "ratings"},
                "spec": {
                    "parentRefs": [{"group": "", "kind": "Service", "name": "ratings", "port": 80}],
                    "rules": [
                        {
                            "matches": [{"path": {"type": "PathPrefix", "value": "/slow"}}],
                            "timeouts": {"request": "300ms"},
                            "backendRefs": [{"name": "reviews-v1", "port": 80}]
                        },
                        {
                            "retry": {"codes": [503], "attempts": 2, "backoff": "10ms"},
                            "backendRefs": [{"name": "ratings", "port": 80}]
                        }
                    ]
                }
            })],
        )
        .unwrap();
    let load = |path: &str| {
        let extra = ["--path", path, "--count", "100", "--concurrency", "4"];
        Summary::parse(&mesh_client(&shop.frontend, ratings_vip, "ratings", &extra))
    };
    eventually(
        "every request succeeds although one endpoint always answers 503",
        || {
            let summary = load("/");
            if summary.all_ok() && summary.count("ratings-1") == 100 {
                Ok(())
            } else {
                Err(format!("{summary:?}"))
            }
        },
    );
    let log = shop.waypoint.process.log().unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("ratings-0") || l.contains("attempts=2")),
        "some requests were retried away from ratings-0"
    );

    let started = Instant::now();
    let slow = request(
        &shop.frontend,
        ratings_vip,
        "ratings",
        "/slow?delay=3000",
        &[],
    );
    let took = started.elapsed();
    assert_eq!(slow.status(), "504", "{:?}", slow.0);
    assert!(
        took < Duration::from_millis(2500),
        "answered after {took:?}, not at the 300ms timeout"
    );
}

/// `mesh-client` in a long-lived mode: the `Echo=` lines and the final `Status=`.
fn stream_exchange(
    from: &Pod,
    to: SocketAddr,
    host: &str,
    mode: &str,
    text: &str,
) -> (Vec<String>, String) {
    let out = mesh_client(from, to, host, &[mode, text, "--rounds", "5"]);
    let echoes = out
        .lines()
        .filter_map(|l| l.strip_prefix("Echo="))
        .map(str::to_owned)
        .collect();
    let status = out
        .lines()
        .find_map(|l| l.strip_prefix("Status="))
        .unwrap_or(&out)
        .to_owned();
    (echoes, status)
}

#[test]
fn websockets_upgrade_and_grpc_streams_stay_open_through_the_waypoint() {
    let mut shop = bookshop();
    // gRPC needs HTTP/2 to the backend: a port named grpc says so.
    let grpc = shop
        .mesh
        .cluster
        .add_service(
            ServiceSpec::new("shop", "reviews-grpc")
                .selector("app", "reviews")
                .selector("version", "v1")
                .port("grpc", 7070, 8080),
        )
        .unwrap();
    shop.mesh
        .wait_for_services(&[("shop", "reviews-grpc")])
        .unwrap();
    let grpc_vip = SocketAddr::new(grpc.vip.into(), 7070);

    let (echoes, status) = stream_exchange(
        &shop.frontend,
        shop.reviews_vip,
        "reviews",
        "--websocket",
        "hello",
    );
    assert_eq!(status, "101", "{echoes:?}");
    assert_eq!(
        echoes,
        (0..5).map(|i| format!("hello {i}")).collect::<Vec<_>>()
    );

    let (echoes, status) = stream_exchange(
        &shop.frontend,
        grpc_vip,
        "reviews-grpc",
        "--grpc-stream",
        "ping",
    );
    assert_eq!(status, "grpc-0", "{echoes:?}");
    assert_eq!(
        echoes,
        (0..5).map(|i| format!("ping {i}")).collect::<Vec<_>>()
    );

    // Both went through the waypoint (not around it), each as one request.
    let log = shop.waypoint.process.log().unwrap();
    assert!(
        log.lines().any(|l| l.contains("request complete")
            && l.contains("path=/ws")
            && l.contains("status=101")),
        "the WebSocket upgrade is in the waypoint's access log"
    );
    assert!(
        log.lines().any(|l| l.contains("request complete")
            && l.contains("EchoStream")
            && l.contains(r#"grpc_status="0""#)),
        "the gRPC stream is in the waypoint's access log"
    );
}
