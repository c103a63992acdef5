//! Compiling a large snapshot: 10 000 routes over 500 Services. Prints the time (DESIGN §4: a
//! benchmark is not a timed assertion; the target is a rebuild well under 100 ms in release).

use std::time::Instant;

use discovery::gateway_api::{
    BackendRef, HeaderMatch, HttpBackend, HttpMatch, HttpRoute, HttpRule, ParentRef, PathMatch,
    StringMatch, Timeouts,
};
use discovery::{Objects, SnapshotOptions};

use super::*;

const SERVICES: usize = 500;
const ROUTES: usize = 10_000;

fn services_yaml() -> String {
    (0..SERVICES)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: ns-{}}}\n\
                 spec: {{clusterIP: 10.{}.{}.1, ports: [{{name: http, port: 80}}]}}\n---\n",
                i % 20,
                100 + i / 250,
                i % 250
            )
        })
        .collect()
}

fn route(i: usize) -> HttpRoute {
    let service = i % SERVICES;
    let namespace = format!("ns-{}", service % 20);
    let backend = |name: String| HttpBackend {
        backend: BackendRef {
            group: String::new(),
            kind: "Service".into(),
            namespace: namespace.clone(),
            name,
            port: Some(80),
            weight: 1,
        },
        filters: Vec::new(),
    };
    HttpRoute {
        namespace: namespace.clone(),
        name: format!("route-{i}"),
        generation: Some(1),
        parent_refs: vec![ParentRef {
            group: String::new(),
            kind: "Service".into(),
            namespace: namespace.clone(),
            name: format!("svc-{service}"),
            section_name: None,
            port: Some(80),
        }],
        hostnames: Vec::new(),
        rules: vec![HttpRule {
            name: None,
            matches: vec![HttpMatch {
                path: PathMatch::PathPrefix(format!("/api/v{}/items", i % 7)),
                headers: vec![HeaderMatch {
                    name: "x-tenant".into(),
                    value: StringMatch::Exact(format!("tenant-{i}")),
                }],
                query_params: Vec::new(),
                method: Some("GET".into()),
            }],
            filters: Vec::new(),
            backends: vec![backend(format!("svc-{service}"))],
            timeouts: Timeouts::default(),
            retry: None,
        }],
        rejected: None,
    }
}

#[test]
fn compiles_ten_thousand_routes() {
    let services: Vec<_> = load(&services_yaml()).services().cloned().collect();
    assert_eq!(services.len(), SERVICES);
    let objects = Objects {
        services,
        http_routes: (0..ROUTES).map(route).collect(),
        ..Objects::default()
    };
    let (snapshot, conflicts) = Snapshot::build(objects, &SnapshotOptions::default());
    assert!(conflicts.is_empty(), "{conflicts:?}");
    let started = Instant::now();
    let table = compile(&snapshot);
    let elapsed = started.elapsed();
    assert_eq!(table.route_count(), ROUTES);
    eprintln!("compiled {ROUTES} routes over {SERVICES} Services in {elapsed:?}");

    // Every route is reachable: the last one, by its tenant header.
    let last = ROUTES - 1;
    let service = format!("ns-{}/svc-{}", (last % SERVICES) % 20, last % SERVICES);
    let tenant = format!("tenant-{last}");
    let req = request(
        &format!("GET /api/v{}/items/1", last % 7),
        &[("x-tenant", &tenant)],
    );
    assert_eq!(
        outcome(&table, &service, 80, None, &req),
        format!("route-{last}#0")
    );
}
