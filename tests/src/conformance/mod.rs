//! Gateway API mesh (GAMMA) conformance in the cluster-in-a-box: every case of
//! `conformance/gateway-api/cases/mesh-*.yaml` replayed through real ztunnels and a real
//! waypoint, from a real client pod to real echo pods, judged as the upstream Go suite judges
//! mesh cases.
//!
//! ```no_run
//! use ambit_tests::conformance::{load_mesh_cases, data_dir, MeshConformance, Options};
//! # fn main() -> ambit_tests::Result<()> {
//! let mut mesh = ambit_tests::Mesh::start(2)?;
//! let harness = MeshConformance::setup(&mut mesh, Options::from_env())?;
//! let report = harness.run_all(&mut mesh, &load_mesh_cases(&data_dir())?);
//! assert!(report.failures_in(&["MESH-HTTP", "MESH-GRPC"]).is_empty());
//! # Ok(()) }
//! ```
//!
//! The pieces: [`case`] (the data as types), [`objects`] (mesh-base.yaml and a test's manifests
//! as cluster objects), [`resolve`] (cluster DNS, emulated), [`output`] and [`judge`] (reading
//! and judging `ambit-testapp mesh-client`), [`setup`] and [`runner`] (the live part), [`report`].

pub mod case;
pub mod judge;
pub mod objects;
pub mod output;
pub mod report;
pub mod resolve;
pub mod runner;
pub mod setup;

#[cfg(test)]
mod tests;

pub use case::{data_dir, load_mesh_cases, CaseFile};
pub use report::{CaseResult, Report, TestResult};
pub use setup::{MeshConformance, Options};
