//! Gateway API mesh (GAMMA) conformance, v1.6.1: all 22 mesh tests (81 cases) replayed through
//! real ztunnels and a real waypoint on a two-node cluster-in-a-box. Prints per-test and
//! per-feature pass counts; every test of the MESH-HTTP and MESH-GRPC profiles must pass, the
//! others (extended features, provisional tests outside the profiles) are reported.
//!
//! `sudo -E cargo test -p ambit-tests --test mesh_conformance -- --nocapture`;
//! `AMBIT_MESH_CONFORMANCE_TIMEOUT_S` changes the 30 s a case may take to pass.

use ambit_tests::conformance::{data_dir, load_mesh_cases, MeshConformance, Options};
use ambit_tests::{Mesh, Result};

const PROFILES: &[&str] = &["MESH-HTTP", "MESH-GRPC"];

#[test]
fn every_mesh_http_and_mesh_grpc_case_passes_through_ztunnel_and_the_waypoint() -> Result<()> {
    let files = load_mesh_cases(&data_dir())?;
    let mut mesh = Mesh::start(2)?;
    let harness = MeshConformance::setup(&mut mesh, Options::from_env())?;
    let report = harness.run_all(&mut mesh, &files);

    let totals = report.totals();
    assert_eq!(totals.tests, 22, "every mesh test ran");
    let outside: Vec<String> = report
        .tests
        .iter()
        .filter(|t| !t.profiles.iter().any(|p| PROFILES.contains(&p.as_str())))
        .filter_map(|t| t.first_failure().map(|f| format!("{}: {f}", t.name)))
        .collect();
    if !outside.is_empty() {
        eprintln!(
            "failing outside the profiles (reported, not asserted):\n  {}",
            outside.join("\n  ")
        );
    }
    let failures = report.failures_in(PROFILES);
    assert!(
        failures.is_empty(),
        "{} test(s) of {PROFILES:?} failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    Ok(())
}
