//! Remove namespaces and leases left by crashed cluster-in-a-box runs (live runs are kept).
//! Safe to run any time, e.g. at the start of CI.

use std::process::ExitCode;

fn main() -> ExitCode {
    if let Err(error) = ambit_tests::require_root() {
        eprintln!("ambit-netns-sweep: {error}");
        return ExitCode::FAILURE;
    }
    match ambit_tests::sweep_stale() {
        Ok(report) => {
            println!(
                "removed {} namespaces {:?} and {} leases {:?}",
                report.namespaces.len(),
                report.namespaces,
                report.leases.len(),
                report.leases
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("ambit-netns-sweep: {error}");
            ExitCode::FAILURE
        }
    }
}
