//! The manifest collector (discovery/src/decode.rs, as `--manifests` files and folders are
//! loaded by discovery/src/local.rs): YAML or JSON text, many documents, `List`s, merge keys,
//! every kind the mesh reads, through decoding, conversion and the snapshot build.
//!
//! Contract: never panics; a refused load names at least one problem, each pointing into the
//! file (document ≥ 1, for conflicts and duplicates both places); a load that goes through
//! reports only policies enforced fail-closed (or left out) and rejected Gateway API objects as
//! problems, each rejected object once; and the snapshot's indexes agree with its contents —
//! every workload is found by name and by each of its IPs, every service by name and by each VIP
//! and TCP port, and evaluating the policies for any workload works.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use discovery::fuzzing::{load_manifest_text, MANIFEST_PATH};
use discovery::{authorize, ConnectionAttrs, Location, ManifestError, Protocol};
use libfuzzer_sys::fuzz_target;

fn check_location(location: &Location) {
    assert_eq!(location.file.to_str(), Some(MANIFEST_PATH), "{location}");
    assert!(location.document >= 1, "problem reported at {location}");
}

fn check_error(error: &ManifestError) {
    assert!(!error.to_string().is_empty());
    match error {
        ManifestError::Read { .. } => panic!("no file is read here: {error}"),
        ManifestError::Yaml { location, .. }
        | ManifestError::Field { location, .. }
        | ManifestError::Policy { location, .. }
        | ManifestError::Rejected { location, .. } => check_location(location),
        ManifestError::Duplicate {
            location, first, ..
        } => {
            check_location(location);
            check_location(first);
        }
        ManifestError::Conflict {
            location,
            other_location,
            ..
        } => {
            check_location(location);
            check_location(other_location);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (snapshot, problems) = match load_manifest_text(text) {
        Ok(loaded) => loaded,
        Err(errors) => {
            assert!(!errors.errors().is_empty(), "refused without a reason");
            errors.errors().iter().for_each(check_error);
            return;
        }
    };
    for problem in &problems {
        check_error(problem);
        assert!(
            matches!(
                problem,
                ManifestError::Policy { .. } | ManifestError::Rejected { .. }
            ),
            "a blocking problem did not block the load: {problem}"
        );
    }
    for workload in snapshot.workloads() {
        let by_name = snapshot
            .workload(&workload.namespace, &workload.name)
            .expect("workload not found by its name");
        assert_eq!(by_name.uid, workload.uid);
        if !workload.host_network {
            for ip in &workload.ips {
                let by_ip = snapshot
                    .workload_by_ip(*ip)
                    .expect("workload not found by IP");
                assert_eq!(by_ip.uid, workload.uid, "{ip} indexed to another pod");
            }
        }
        let identity = certs::SpiffeId::new("cluster.local", "fuzz", "fuzz").ok();
        let conn = ConnectionAttrs {
            src_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            src_identity: identity.as_ref(),
            dst_port: 80,
        };
        let _ = authorize(snapshot.policies_for(workload), &conn);
        let _ = snapshot.is_ambient(workload);
    }
    for service in snapshot.services() {
        let by_name = snapshot
            .service(&service.namespace, &service.name)
            .expect("service not found by its name");
        assert_eq!(by_name.vips, service.vips);
        for port in &service.ports {
            let _ = snapshot.endpoints_for(service, port);
            if port.protocol != Protocol::Tcp {
                continue; // only TCP ports are indexed: the mesh proxies TCP
            }
            for vip in &service.vips {
                let (found, _) = snapshot
                    .service_by_vip(*vip, port.port)
                    .expect("service not found by VIP and port");
                assert_eq!(
                    (&found.namespace, &found.name),
                    (&service.namespace, &service.name),
                    "{vip}:{} indexed to another service",
                    port.port
                );
            }
        }
    }
    // Every policy enforced fail-closed was reported (left-out ones are reported too).
    let reported = problems
        .iter()
        .filter(|p| matches!(p, ManifestError::Policy { .. }))
        .count();
    assert!(snapshot.invalid_policies().count() <= reported);
    // Every Gateway API object kept as rejected was reported, once.
    let rejected = problems
        .iter()
        .filter(|p| matches!(p, ManifestError::Rejected { .. }))
        .count();
    assert_eq!(snapshot.gateway_api().rejected().len(), rejected);
});
