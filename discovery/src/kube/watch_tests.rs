#![allow(clippy::unwrap_used)]

use k8s_openapi::api::core::v1::Pod;

use super::*;
use crate::convert;
use crate::kinds::Object;
use crate::kube::store::Store;
use crate::model::Workload;
use crate::policy::AuthorizationPolicy;

fn pod_text(name: &str, extra_spec: &str, status: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: shop, uid: u-{name}, labels: {{app: web}}, annotations: {{big: '{big}'}}}}
spec:
  serviceAccountName: web
  containers: [{{name: c, image: web, ports: [{{name: http, containerPort: 8080}}]}}]
{extra_spec}
status:
{status}",
        big = "x".repeat(64)
    )
}

/// A Pod as a watch event delivers it.
fn pod_yaml(name: &str, extra_spec: &str, status: &str) -> DynamicObject {
    serde_yaml::from_str(&pod_text(name, extra_spec, status)).unwrap()
}

fn scheduled(name: &str) -> DynamicObject {
    pod_yaml(name, "  nodeName: node-a", "  podIP: 10.0.0.1")
}

fn workloads(store: &KindStore<Object>) -> Vec<Workload> {
    let mut workloads: Vec<Workload> = store
        .values()
        .into_iter()
        .filter_map(|object| match object {
            Object::Workload(workload) => Some(workload),
            _ => None,
        })
        .collect();
    workloads.sort_by(|a, b| a.name.cmp(&b.name));
    workloads
}

fn names(store: &KindStore<Object>) -> Vec<String> {
    workloads(store).into_iter().map(|w| w.name).collect()
}

/// Applies an event the way the Pod watch does: through the Pod's table entry.
fn apply(store: &mut KindStore<Object>, event: Event<DynamicObject>) -> Outcome {
    let pods = resource("", "v1", "Pod", "pods");
    let convert =
        |object: &DynamicObject| convert_object(Kind::Pod.info(), object, &pods, "ambit-system");
    apply_event(Kind::Pod, store, event, &convert)
}

#[test]
fn pods_are_converted_with_the_shared_conversion() {
    let mut store = KindStore::default();
    apply(&mut store, Event::Init);
    apply(&mut store, Event::InitApply(scheduled("web-0")));
    assert!(apply(&mut store, Event::InitDone).changed);
    let workloads = workloads(&store);
    let web = &workloads[0];
    // The same model the manifest loader produces, and nothing more is kept.
    let typed: Pod = serde_yaml::from_str(&pod_text(
        "web-0",
        "  nodeName: node-a",
        "  podIP: 10.0.0.1",
    ))
    .unwrap();
    assert_eq!(web, &convert::workload(&typed).unwrap());
    assert_eq!(web.node, "node-a");
    assert_eq!(web.service_account, "web");
    assert_eq!(web.uid, "u-web-0");
    assert_eq!(web.named_ports[0].port, 8080);
}

#[test]
fn unscheduled_and_finished_pods_are_not_kept() {
    let mut store = KindStore::default();
    let pending = pod_yaml("pending", "", "  phase: Pending");
    assert!(!apply(&mut store, Event::Apply(pending)).changed);
    let done = pod_yaml("done", "  nodeName: node-a", "  phase: Succeeded");
    assert!(!apply(&mut store, Event::Apply(done)).changed);
    assert!(apply(&mut store, Event::Apply(scheduled("web-0"))).changed);
    // The pod finishes: it leaves the view.
    let finished = pod_yaml("web-0", "  nodeName: node-a", "  phase: Failed");
    assert!(apply(&mut store, Event::Apply(finished)).changed);
    assert!(names(&store).is_empty());
}

#[test]
fn watch_events_add_update_delete_and_relist() {
    let mut store = KindStore::default();
    apply(&mut store, Event::Init);
    apply(&mut store, Event::InitApply(scheduled("a")));
    apply(&mut store, Event::InitApply(scheduled("b")));
    apply(&mut store, Event::InitDone);
    assert!(apply(&mut store, Event::Apply(scheduled("c"))).changed);
    // An update that only touches what the mesh does not keep is not a change.
    let mut annotated = scheduled("c");
    annotated
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("note".into(), "x".into());
    assert!(!apply(&mut store, Event::Apply(annotated)).changed);
    assert!(apply(&mut store, Event::Delete(scheduled("a"))).changed);
    assert_eq!(names(&store), ["b", "c"]);
    // Relist after 410 Gone: c was deleted and d created while the watch was down.
    apply(&mut store, Event::Init);
    apply(&mut store, Event::InitApply(scheduled("b")));
    apply(&mut store, Event::InitApply(scheduled("d")));
    assert!(apply(&mut store, Event::InitDone).changed);
    assert_eq!(names(&store), ["b", "d"]);
}

#[test]
fn a_pod_the_mesh_cannot_use_is_left_out_with_its_field() {
    let mut store = KindStore::default();
    let bad = pod_yaml("bad", "  nodeName: node-a", "  podIP: 10.0.0.300");
    let outcome = apply(&mut store, Event::Apply(bad));
    assert!(outcome.new_problem);
    let mut shared = Store::default();
    *shared.kind_mut(Kind::Pod) = store;
    let problems = shared.problems();
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].starts_with("Pod shop/bad: field status.podIP"),
        "{}",
        problems[0]
    );
}

fn dynamic(yaml: &str) -> DynamicObject {
    serde_yaml::from_str(yaml).unwrap()
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

#[test]
fn v1beta1_endpoint_slices_decode_into_the_v1_model() {
    // As Kubernetes 1.20 serves it: `topology`, no `nodeName`/`zone`.
    let object = dynamic(
        "apiVersion: discovery.k8s.io/v1beta1
kind: EndpointSlice
metadata: {name: web-abc, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [10.0.0.1]
  conditions: {ready: true}
  topology: {kubernetes.io/hostname: node-a}
  targetRef: {kind: Pod, name: web-0, namespace: shop}
",
    );
    let resource = resource(
        "discovery.k8s.io",
        "v1beta1",
        "EndpointSlice",
        "endpointslices",
    );
    let converted = convert_object(
        Kind::EndpointSlice.info(),
        &object,
        &resource,
        "ambit-system",
    );
    let Ok(Some(Object::EndpointSlice(slice))) = converted else {
        panic!("{converted:?}")
    };
    assert_eq!(slice.service, "web");
    assert_eq!(slice.ports[0].port, 8080);
    assert_eq!(
        slice.endpoints[0].pod,
        Some(("shop".into(), "web-0".into()))
    );
}

#[test]
fn authorization_policies_decode_from_dynamic_objects() {
    let resource = resource(
        "security.istio.io",
        "v1beta1",
        "AuthorizationPolicy",
        "authorizationpolicies",
    );
    // Watch events may lack apiVersion/kind; they are filled in from the resource.
    let object = dynamic(
        "metadata: {name: allow-web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/client]}}]}]
",
    );
    let policy = authorization_policy(&object, &resource, "ambit-system")
        .unwrap()
        .unwrap();
    assert_eq!(policy.name, "allow-web");
    assert_eq!(policy.invalid, None);

    // Misspelt: kept in its fail-closed form, the field and the schema named.
    let misspelt = dynamic("metadata: {name: p, namespace: shop}\nspec: {rulez: []}");
    let policy = authorization_policy(&misspelt, &resource, "ambit-system")
        .unwrap()
        .unwrap();
    let invalid = policy.invalid.unwrap();
    assert_eq!(invalid.field, "spec.rulez");
    assert!(invalid.problem.contains("rulez"), "{invalid:?}");
    assert!(
        invalid.problem.contains("security.istio.io/v1beta1"),
        "{invalid:?}"
    );
}

#[test]
fn watch_failures_say_what_to_check() {
    let status = |code: u16| {
        let mut status = ::kube::core::Status::failure("denied", "Forbidden");
        status.code = code;
        Box::new(status)
    };
    let forbidden = watcher::Error::InitialListFailed(::kube::Error::Api(status(403)));
    assert!(describe(Kind::Pod, &forbidden).contains("list and watch on pods"));
    let policies = describe(Kind::AuthorizationPolicy, &forbidden);
    assert!(
        policies.contains("on authorizationpolicies (ClusterRole)"),
        "{policies}"
    );
    let unauthorised = watcher::Error::WatchStartFailed(::kube::Error::Api(status(401)));
    assert!(describe(Kind::Service, &unauthorised).contains("credentials were refused"));
    let gone = watcher::Error::WatchError(status(410));
    assert!(is_gone(&gone));
    assert!(!is_gone(&forbidden));
    assert!(describe(Kind::Pod, &watcher::Error::NoResourceVersion).contains("unreachable"));
}

fn policy_resource() -> ApiResource {
    resource(
        "security.istio.io",
        "v1",
        "AuthorizationPolicy",
        "authorizationpolicies",
    )
}

/// A policy as a watch event delivers it (no apiVersion/kind; the resource supplies them).
fn policy_object(spec: &str) -> DynamicObject {
    dynamic(&format!(
        "metadata: {{name: db, namespace: shop, resourceVersion: '7'}}\nspec:\n{spec}"
    ))
}

fn apply_policy(store: &mut KindStore<Object>, event: Event<DynamicObject>) -> Outcome {
    let resource = policy_resource();
    let convert = |object: &DynamicObject| {
        convert_object(
            Kind::AuthorizationPolicy.info(),
            object,
            &resource,
            "ambit-system",
        )
    };
    apply_event(Kind::AuthorizationPolicy, store, event, &convert)
}

fn policies(store: &KindStore<Object>) -> Vec<AuthorizationPolicy> {
    store
        .values()
        .into_iter()
        .filter_map(|object| match object {
            Object::Policy(policy) => Some(policy),
            _ => None,
        })
        .collect()
}

/// Lets `shop/sa/web` from 10.0.0.5 reach `app: db` on 5432.
const ALLOW_DB: &str = "  selector: {matchLabels: {app: db}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/web], ipBlocks: [10.0.0.0/8]}}]
    to: [{operation: {ports: ['5432']}}]
";

/// How `shop/sa/web` from 10.0.0.5 on 5432 fares against the store's policies, for a pod
/// labelled `app`.
fn web_to(store: &KindStore<Object>, app: &str) -> crate::policy::Decision {
    let web = identity::SpiffeId::new("cluster.local", "shop", "web").unwrap();
    let policies = policies(store);
    let applying = policies.iter().filter(|p| {
        p.target_refs.is_empty() && p.selector.as_ref().is_none_or(|s| s["app"] == app)
    });
    let attrs = crate::policy::ConnectionAttrs {
        src_ip: "10.0.0.5".parse().unwrap(),
        src_identity: Some(&web),
        dst_port: 5432,
    };
    crate::policy::authorize(applying, &attrs)
}

#[test]
fn broken_policies_are_kept_fail_closed_and_reported_once() {
    use crate::policy::Decision;
    let mut valid = KindStore::default();
    apply_policy(&mut valid, Event::Apply(policy_object(ALLOW_DB)));
    assert_eq!(web_to(&valid, "db"), Decision::Allow, "the intended form");

    // (case, edit of ALLOW_DB, field, whether web may still reach a pod labelled app=web)
    let cases: &[(&str, (&str, &str), &str, bool)] = &[
        (
            "typo field",
            ("principals", "principal"),
            "spec.rules[0].from[0].source.principal",
            true,
        ),
        (
            "unknown field",
            ("  rules:", "  rulez:"),
            "spec.rulez",
            true,
        ),
        (
            "bad cidr",
            ("10.0.0.0/8", "10.0.0.0/33"),
            "spec.rules[0].from[0].source.ipBlocks[0]",
            true,
        ),
        (
            "bad action",
            ("  selector", "  action: allow\n  selector"),
            "spec.action",
            true,
        ),
        (
            "bad selector",
            ("matchLabels", "matchLabel"),
            "spec.selector.matchLabel",
            false,
        ),
        (
            "deny, bad selector",
            (
                "  selector: {matchLabels: {app: db}}",
                "  action: DENY\n  selector: {matchLabels: [db]}",
            ),
            "spec.selector.matchLabels",
            false,
        ),
    ];
    for (case, (from, to), field, web_open) in cases {
        assert!(ALLOW_DB.contains(from), "{case}: edit does not apply");
        let broken = policy_object(&ALLOW_DB.replacen(from, to, 1));
        let mut store = KindStore::default();
        apply_policy(&mut store, Event::Init);
        let listed = apply_policy(&mut store, Event::InitApply(broken.clone()));
        assert!(listed.new_problem, "{case}: logged when listed");
        assert!(apply_policy(&mut store, Event::InitDone).changed);
        // Kept in force, in its fail-closed form: no longer allow-all, no longer lifted.
        assert_eq!(store.len(), 1, "{case}: kept, not dropped");
        match web_to(&store, "db") {
            Decision::DeniedBy(by) => {
                let invalid = by.invalid.unwrap_or_else(|| panic!("{case}: not marked"));
                assert_eq!(invalid.field, *field, "{case}");
            }
            other => panic!("{case}: {other:?}"),
        }
        assert_eq!(
            web_to(&store, "web") == Decision::Allow,
            *web_open,
            "{case}"
        );
        // Once, not on every status update or relist of the same broken object.
        let again = apply_policy(&mut store, Event::Apply(broken.clone()));
        assert!(!again.new_problem && !again.changed, "{case}: {again:?}");
        apply_policy(&mut store, Event::Init);
        assert!(
            !apply_policy(&mut store, Event::InitApply(broken)).new_problem,
            "{case}"
        );
        assert!(!apply_policy(&mut store, Event::InitDone).changed, "{case}");
        let mut shared = Store::default();
        *shared.kind_mut(Kind::AuthorizationPolicy) = store;
        let problems = shared.problems();
        assert!(
            problems[0].starts_with(&format!("AuthorizationPolicy shop/db: field {field}: ")),
            "{case}: {problems:?}"
        );
        assert!(
            problems[0].contains("until it is fixed the policy"),
            "{case}: {problems:?}"
        );

        // Fixed with kubectl edit: the intended form, the problem gone.
        let mut store = std::mem::take(shared.kind_mut(Kind::AuthorizationPolicy));
        let fixed = apply_policy(&mut store, Event::Apply(policy_object(ALLOW_DB)));
        assert!(fixed.changed && !fixed.new_problem);
        assert_eq!(web_to(&store, "db"), Decision::Allow, "{case}");
    }
}

#[test]
fn a_broken_waypoint_policy_stays_with_its_waypoint_and_audit_is_left_out() {
    let mut store = KindStore::default();
    let waypoint = "  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: wp}]
  rules: [{from: [{source: {ipBlocks: [10.0.0.0/33]}}]}]
";
    assert!(apply_policy(&mut store, Event::Apply(policy_object(waypoint))).new_problem);
    let kept = policies(&store);
    assert_eq!(
        kept[0].target_refs[0].to_string(),
        "Gateway/wp",
        "not ztunnel's to enforce"
    );
    assert!(kept[0].invalid.is_some());

    let audit = "  action: AUDIT\n  rules: [{}]\n";
    let mut store = KindStore::default();
    let outcome = apply_policy(&mut store, Event::Apply(policy_object(audit)));
    assert!(outcome.new_problem && !outcome.changed);
    assert_eq!(store.len(), 0, "an AUDIT policy cannot change access");
}

#[test]
fn a_failed_watch_is_retried_within_seconds_however_long_the_outage() {
    let mut backoff = watch_backoff();
    let delays: Vec<std::time::Duration> = (0..20).map(|_| backoff.next().unwrap()).collect();
    assert!(
        delays[0] >= std::time::Duration::from_millis(500),
        "{delays:?}"
    );
    assert!(
        delays
            .iter()
            .all(|d| *d <= std::time::Duration::from_secs(8)),
        "a node must not wait up to a minute after the API server is back: {delays:?}"
    );
}

#[test]
fn a_broken_route_from_the_api_server_is_kept_rejected_and_reported_once() {
    let routes = resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes");
    let apply = |store: &mut KindStore<Object>, event| {
        let convert = |object: &DynamicObject| {
            convert_object(Kind::HttpRoute.info(), object, &routes, "ambit-system")
        };
        apply_event(Kind::HttpRoute, store, event, &convert)
    };
    let broken = dynamic(
        "metadata: {name: cart, namespace: shop}
spec:
  parentRefs: [{name: gw}]
  rules: [{matches: [{path: {value: cart}}], backendRefs: [{name: cart, port: 8080}]}]
",
    );
    let mut store = KindStore::default();
    let outcome = apply(&mut store, Event::Apply(broken.clone()));
    assert!(outcome.changed && outcome.new_problem, "{outcome:?}");
    assert!(!apply(&mut store, Event::Apply(broken)).new_problem, "once");
    let Some(Object::HttpRoute(route)) = store.values().pop() else {
        panic!("the rejected route is kept")
    };
    assert!(route.rules.is_empty() && route.rejected.is_some());
    let mut shared = Store::default();
    *shared.kind_mut(Kind::HttpRoute) = store;
    let problems = shared.problems();
    assert!(
        problems[0].starts_with(
            "HTTPRoute shop/cart: field spec.rules[0].matches[0].path.value: \"cart\" must be an absolute path"
        ),
        "{problems:?}"
    );
    assert!(problems[0].contains("kept as rejected"), "{problems:?}");
}
