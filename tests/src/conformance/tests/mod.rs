//! The harness without a cluster: the data parses, mesh-base expands as Kubernetes would,
//! names resolve as cluster DNS would, every case turns into a client command line (data.rs),
//! and the judge agrees with the upstream rules on synthetic client outputs (judging.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

mod data;
mod judging;

use super::case::{data_dir, load_mesh_cases, Case, CaseFile};
use super::judge::{backend_of_pod, judge, judge_distribution, strict_checks};
use super::objects::{expand_deployments, parse_base, route_documents, BaseObjects, EchoPorts};
use super::output::{EchoResponse, Summary};
use super::report::{CaseResult, Report, TestResult};
use super::resolve::{default_port, Resolver};
use super::runner::build_client_args;

fn all_files() -> Vec<CaseFile> {
    load_mesh_cases(&data_dir()).unwrap()
}

fn file(name: &str) -> CaseFile {
    all_files().into_iter().find(|f| f.name == name).unwrap()
}

fn base() -> BaseObjects {
    parse_base(&std::fs::read_to_string(data_dir().join("mesh-base.yaml")).unwrap()).unwrap()
}

/// A resolver over mesh-base as [`super::setup`] builds it, with made-up addresses.
fn resolver() -> Resolver {
    let mut resolver = Resolver::default();
    for (index, service) in base().services.iter().enumerate() {
        resolver.add_service(
            &service.namespace,
            &service.name,
            Ipv4Addr::new(10, 9, 200, 10 + index as u8),
        );
    }
    for (index, pod) in expand_deployments(&base().deployments, 2)
        .unwrap()
        .iter()
        .enumerate()
    {
        resolver.add_pod(
            &pod.namespace,
            &pod.labels,
            Ipv4Addr::new(10, 9, 1, 2 + index as u8),
        );
    }
    resolver
}
