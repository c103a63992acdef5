//! Replaying case files on a running mesh-base: a test's manifests are written once, each case
//! is retried until it passes `consecutive_successes` times in a row within
//! `max_time_to_consistency` (the Go suite's `AwaitConvergence`), weighted cases then sample the
//! distribution, and the manifests are removed again so tests do not leak into each other.

use std::time::{Duration, Instant};

use crate::conformance::case::{Case, CaseFile};
use crate::conformance::judge::{judge, judge_distribution, strict_checks};
use crate::conformance::objects::route_documents;
use crate::conformance::output::{EchoResponse, Summary};
use crate::conformance::report::{CaseResult, Report, TestResult};
use crate::conformance::resolve::default_port;
use crate::conformance::setup::MeshConformance;
use crate::error::{HarnessError, Result};
use crate::mesh::Mesh;
use crate::pod::Pod;

impl MeshConformance {
    /// Runs every file in order, printing each test's line to stderr as it finishes and the
    /// whole report at the end.
    pub fn run_all(&self, mesh: &mut Mesh, files: &[CaseFile]) -> Report {
        let mut report = Report::default();
        for file in files {
            let result = self.run_test(mesh, file);
            eprintln!(
                "mesh conformance: {} {}/{}{}",
                result.name,
                result.cases_passed(),
                result.cases.len(),
                result
                    .first_failure()
                    .map(|f| format!(" — {f}"))
                    .unwrap_or_default()
            );
            report.tests.push(result);
        }
        eprint!("{}", report.render());
        report
    }

    /// One case file: apply its manifests, run its cases, remove the manifests.
    pub fn run_test(&self, mesh: &mut Mesh, file: &CaseFile) -> TestResult {
        let mut result = TestResult {
            name: file.name.clone(),
            features: file.features.clone(),
            profiles: file.profiles.clone(),
            provisional: file.provisional,
            setup_error: None,
            cases: Vec::new(),
        };
        let written = match self.apply_manifests(mesh, file) {
            Ok(written) => written,
            Err((written, error)) => {
                // Every case counts as failed, so per-feature case counts stay comparable.
                result.cases = file
                    .cases
                    .iter()
                    .map(|case| CaseResult {
                        label: case.label(),
                        passed: false,
                        reason: Some(format!("not run: {error}")),
                        strict: Vec::new(),
                        attempts: 0,
                    })
                    .collect();
                result.setup_error = Some(error.to_string());
                self.remove_manifests(mesh, &written);
                return result;
            }
        };
        result.cases = file.cases.iter().map(|case| self.run_case(case)).collect();
        self.remove_manifests(mesh, &written);
        result
    }

    /// Writes each of the test's files as its own manifest; returns the names written (also on
    /// failure, so they can be removed).
    fn apply_manifests(
        &self,
        mesh: &mut Mesh,
        file: &CaseFile,
    ) -> std::result::Result<Vec<String>, (Vec<String>, HarnessError)> {
        let mut written = Vec::new();
        for (index, manifest) in file.manifests.files.iter().enumerate() {
            let name = format!("60-conformance.{}.{index}.yaml", file.name);
            let applied =
                route_documents(manifest).and_then(|docs| mesh.cluster.put_manifest(&name, docs));
            match applied {
                Ok(()) => written.push(name),
                Err(error) => return Err((written, error)),
            }
        }
        Ok(written)
    }

    fn remove_manifests(&self, mesh: &mut Mesh, written: &[String]) {
        for name in written {
            if let Err(error) = mesh.cluster.remove_manifest(name) {
                eprintln!("mesh conformance: removing {name}: {error}");
            }
        }
        if !written.is_empty() {
            std::thread::sleep(self.options.settle);
        }
    }

    /// One case: converge, then (weighted cases) sample the distribution.
    pub fn run_case(&self, case: &Case) -> CaseResult {
        let mut result = CaseResult {
            label: case.label(),
            passed: false,
            reason: None,
            strict: Vec::new(),
            attempts: 0,
        };
        let prepared = self
            .client_for(case)
            .and_then(|client| Ok((client, self.client_args(case)?)));
        let (client, args) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                result.reason = Some(error.to_string());
                return result;
            }
        };
        match self.converge(client, &args, case, &mut result) {
            Err(reason) => result.reason = Some(reason),
            Ok(()) => match &case.expect.distribution {
                None => result.passed = true,
                Some(expected) => {
                    let sampling = case.expect.sampling.clone().unwrap_or_default();
                    let mut sample_args = args.clone();
                    sample_args.extend([
                        "--count".to_string(),
                        sampling.requests.to_string(),
                        "--concurrency".into(),
                        sampling.concurrency.to_string(),
                    ]);
                    for _ in 0..sampling.attempts.max(1) {
                        result.attempts += 1;
                        let verdict = self
                            .exec_client(client, &sample_args, Duration::from_secs(120))
                            .and_then(|out| Summary::parse(&out))
                            .and_then(|summary| {
                                judge_distribution(
                                    expected,
                                    sampling.tolerance_abs_fraction,
                                    &summary,
                                )
                            });
                        match verdict {
                            Ok(()) => {
                                result.passed = true;
                                result.reason = None;
                                break;
                            }
                            Err(reason) => result.reason = Some(format!("distribution: {reason}")),
                        }
                    }
                }
            },
        }
        result
    }

    /// `AwaitConvergence`: the case must pass `consecutive_successes` times in a row before the
    /// deadline. Strict-check failures of the last passing answer are kept in `result`.
    fn converge(
        &self,
        client: &Pod,
        args: &[String],
        case: &Case,
        result: &mut CaseResult,
    ) -> std::result::Result<(), String> {
        let options = &self.options;
        let deadline = Instant::now() + options.max_time_to_consistency;
        let mut in_a_row = 0;
        let mut last_failure = String::from("no attempt made");
        loop {
            result.attempts += 1;
            let verdict = self
                .exec_client(
                    client,
                    args,
                    options.request_timeout + Duration::from_secs(5),
                )
                .map(|out| EchoResponse::parse(&out))
                .and_then(|response| judge(case, &response).map(|()| response));
            match verdict {
                Ok(response) => {
                    in_a_row += 1;
                    if in_a_row >= options.consecutive_successes {
                        result.strict = strict_checks(case, &response);
                        return Ok(());
                    }
                }
                Err(reason) => {
                    in_a_row = 0;
                    last_failure = reason;
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not {} passes in a row within {:?}: {last_failure}",
                    options.consecutive_successes, options.max_time_to_consistency
                ));
            }
            std::thread::sleep(options.retry_interval);
        }
    }

    /// Runs `mesh-client` in `client`; a non-zero exit (no answer at all) is a failure reason.
    fn exec_client(
        &self,
        client: &Pod,
        args: &[String],
        timeout: Duration,
    ) -> std::result::Result<String, String> {
        let output = client
            .exec_output(self.app.path(), args, timeout)
            .map_err(|e| e.to_string())?;
        if output.success {
            Ok(output.stdout)
        } else {
            Err(format!("no answer: {}", output.stderr.trim()))
        }
    }

    /// The first pod matching the case's `mesh_client` (the Go suite takes the first listed).
    fn client_for(&self, case: &Case) -> Result<&Pod> {
        let client = case
            .target
            .mesh_client
            .as_ref()
            .ok_or_else(|| HarnessError::Invalid("case has no target.mesh_client".into()))?;
        let selector = client.selector()?;
        self.pods
            .iter()
            .find(|(plan, _)| {
                plan.namespace == client.namespace
                    && selector.iter().all(|(k, v)| plan.labels.get(k) == Some(v))
            })
            .map(|(_, pod)| pod)
            .ok_or_else(|| {
                HarnessError::Invalid(format!(
                    "no pod in {} matches {}",
                    client.namespace, client.pod_selector
                ))
            })
    }

    /// `mesh-client` arguments for one request of `case`.
    pub fn client_args(&self, case: &Case) -> Result<Vec<String>> {
        let request = &case.request;
        let namespace = case
            .target
            .mesh_client
            .as_ref()
            .map_or(crate::conformance::setup::MESH_NAMESPACE, |c| {
                c.namespace.as_str()
            });
        let destination = self
            .resolver
            .resolve(request.host(), namespace, default_port(request.scheme()))
            .map_err(HarnessError::Invalid)?;
        build_client_args(case, &destination, self.options.request_timeout)
    }
}

/// The client's command line for `case` sent to `destination`: Host is the case's `Host`
/// header when it sets one (Go's `-H Host:` sets `req.Host`), else the URL authority.
pub fn build_client_args(
    case: &Case,
    destination: &crate::conformance::resolve::Destination,
    timeout: Duration,
) -> Result<Vec<String>> {
    let request = &case.request;
    let host = request
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("host"))
        .map_or(destination.authority.clone(), |(_, value)| value.clone());
    let mut args = vec![
        "mesh-client".to_string(),
        "--connect".into(),
        destination.connect.to_string(),
        "--host".into(),
        host,
        "--timeout-ms".into(),
        timeout.as_millis().to_string(),
    ];
    match request.scheme() {
        "grpc" => args.push("--grpc".into()),
        "http" => {
            args.extend(["--path".into(), request.path().to_string()]);
            args.extend(["--method".into(), request.method().to_string()]);
        }
        other => {
            return Err(HarnessError::Invalid(format!(
                "scheme {other} is not supported by the mesh harness"
            )))
        }
    }
    for (name, value) in &request.headers {
        if !name.eq_ignore_ascii_case("host") {
            args.extend(["--header".into(), format!("{name}: {value}")]);
        }
    }
    Ok(args)
}
